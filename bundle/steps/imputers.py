"""Kinds of the imputers and the missing-value indicator."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
from sklearn.impute import MissingIndicator, SimpleImputer

from . import graph as g
from . import replay as r
from .kinds import HANDLED, REFUSED, Context, Kind, Node, NoForm, StepRules

__all__ = ["KINDS"]

FAMILY = "imputers"
NOT_A_DECODER = "an imputer has no inverse_transform to decode model outputs with"


def _imputes_nan(obj: Any) -> bool:
    missing = obj.missing_values
    return missing is None or r.is_scalar_nan(missing)


def _simple_imputer_rules(obj: SimpleImputer) -> StepRules:
    """NaN (or None) imputed; numeric data refuses infinity (check_array's allow-nan).

    Output column j is still input column j unless an all-missing column was dropped (the
    indicator columns, if any, come after).
    """
    numeric = obj._fit_dtype.kind != "O"
    if not _imputes_nan(obj):
        return StepRules(missing=REFUSED, infinity_refused=numeric)
    dropped = not obj.keep_empty_features and r.missing_mask(obj.statistics_, np.nan).any()
    return StepRules(missing=HANDLED, infinity_refused=numeric, keeps_columns=not dropped)


def _checked_missing(missing: Any) -> Any:
    if not (missing is None or isinstance(missing, (numbers.Number, str))):
        raise NoForm(f"missing_values={missing!r} has no replay (only NaN, None, numbers, text)")
    return missing


# ---------------------------------------------------------------------------------------
# SimpleImputer
# ---------------------------------------------------------------------------------------


class Imputation(NamedTuple):
    """The fitted constants of a SimpleImputer.

    Attributes:
        missing: the missing-value marker.
        keep: the input columns kept (all-missing columns are dropped unless kept).
        fill: their fill values, in the fitted fill dtype.
        flagged: the columns of the missing indicator (``add_indicator``), or None.
        on_objects: fitted on object data (text), imputed column by column.
        floats: the strategy reads floats (mean, median), not numbers as they come.
    """

    missing: Any
    keep: np.ndarray
    fill: np.ndarray
    flagged: np.ndarray | None
    on_objects: bool
    floats: bool


def _imputer_plan(obj: SimpleImputer, ctx: Context) -> Imputation:
    stats = obj.statistics_
    if obj.keep_empty_features:
        keep, fill = np.arange(ctx.n_in), stats.astype(obj._fill_dtype)
    else:
        keep = np.flatnonzero(~r.missing_mask(stats, np.nan))
        fill = stats[keep].astype(obj._fill_dtype)
    return Imputation(
        _checked_missing(obj.missing_values),
        keep,
        fill,
        obj.indicator_.features_ if obj.add_indicator else None,
        obj._fit_dtype.kind == "O",
        obj.strategy in ("mean", "median"),
    )


def _imputer_replay(plan: Imputation, ctx: Context) -> Node:
    missing, keep, fill, flagged = plan.missing, plan.keep, plan.fill, plan.flagged
    n_out = keep.size + (0 if flagged is None else flagged.size)
    check = None if r.is_scalar_nan(missing) else "the imputer treats another value as missing."
    if plan.on_objects:
        return Node(_object_imputer(plan, check, ctx), n_out, False)
    read = r.floats if plan.floats else r.numbers
    kept = slice(None) if keep.size == ctx.n_in else keep

    def run(frame: Any) -> Any:
        x = read(frame)
        r.refuse_not_finite(r.not_finite(x) if check else r.infinite(x), ctx, check or r.INFINITY)
        mask = r.missing_mask(x, missing)
        out = np.where(mask[:, kept], fill.astype(x.dtype, copy=False), x[:, kept])
        return r.ArrayFrame.of(out if flagged is None else np.hstack((out, mask[:, flagged])))

    return Node(run, n_out)


def _as_objects(column: r.Column) -> r.Column:
    if isinstance(column, r.Factorized) or column.dtype.kind == "O":
        return column
    return np.asarray(column, dtype=object)


def _object_imputer(plan: Imputation, check: str | None, ctx: Context):
    """Column by column, so factorized columns are imputed on their distinct values only."""
    missing = plan.missing

    def run(frame: Any) -> Any:
        columns = [_as_objects(frame.column(j)) for j in range(ctx.n_in)]
        if check:
            for j, column in enumerate(columns):
                r.refuse_not_finite(r.per_value(r.not_finite, column), ctx, check, j=j)
        out: list[r.Column] = [
            _impute_column(columns[j], missing, value)
            for j, value in zip(plan.keep, plan.fill, strict=True)
        ]
        if plan.flagged is not None:
            out += [
                r.per_value(lambda v: r.missing_mask(v, missing), columns[j]) for j in plan.flagged
            ]
        return r.ArrayFrame(frame.n_rows, columns=out)

    return run


def _impute_column(column: r.Column, missing: Any, value: Any) -> r.Column:
    def fill(values: np.ndarray) -> np.ndarray:
        filled = values.copy()
        filled[r.missing_mask(values, missing)] = value
        return filled

    if isinstance(column, r.Factorized):
        return r.Factorized(column.codes, fill(column.uniques))
    return fill(column)


def _imputer_graph(plan: Imputation, ctx: Context) -> Node:
    missing, keep, fill, flagged = plan.missing, plan.keep, plan.fill, plan.flagged
    n_out = keep.size + (0 if flagged is None else flagged.size)
    if plan.on_objects:
        return _object_imputer_graph(plan, ctx, n_out)
    read = g.floats if plan.floats else g.numbers_of
    nan_missing = g.is_nan(missing)

    def run(frame: Any) -> Any:
        tf = g.tf()
        x = read(frame)
        if nan_missing:
            g.refuse_infinite(x, ctx)
        else:
            g.refuse_not_finite(x, ctx)
        mask = g.numeric_mask(x, missing)
        kept = x if keep.size == ctx.n_in else tf.gather(x, keep, axis=1)
        kept_mask = mask if keep.size == ctx.n_in else tf.gather(mask, keep, axis=1)
        values = g.constant(fill, g.np_dtype(x))
        out = tf.where(kept_mask, values[None, :], kept)
        if flagged is not None:
            out = tf.concat([out, tf.cast(tf.gather(mask, flagged, axis=1), g.np_dtype(out))], 1)
        return g.TensorFrame.of(out)

    return Node(run, n_out)


def _object_imputer_graph(plan: Imputation, ctx: Context, n_out: int) -> Node:
    """An imputer fitted on object data, column by column (`_object_imputer`)."""
    missing = plan.missing
    checked = not g.is_nan(missing)  # another missing value: NaN itself is refused
    fills = list(np.asarray(plan.fill, dtype=object))
    if isinstance(missing, str):
        ctx.build.note_text([missing], ctx.path)

    def impute(column: Any, value: Any, j: int) -> Any:
        tf = g.tf()
        if isinstance(column, g.Text):
            if not isinstance(value, str):
                raise NoForm(
                    f"{ctx.path} fills text column {ctx.quoted(j)} with {value!r}; only a text "
                    "fill value has a TensorFlow form"
                )
            mask = g.text_mask(column, missing)
            return g.Text(
                tf.where(mask, tf.constant(value), column.values),
                tf.logical_and(column.missing, tf.logical_not(mask)),
                column.sentinel,
            )
        x = tf.cast(column, np.float64)  # an object column of numbers reads as float64
        if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, str):
            raise NoForm(
                f"{ctx.path} fills numeric column {ctx.quoted(j)} with {value!r}; only a "
                "number has a TensorFlow form there"
            )
        return tf.where(g.numeric_mask(x, missing), tf.constant(float(value), tf.float64), x)

    def run(frame: Any) -> Any:
        tf = g.tf()
        columns = frame.columns()
        if checked:
            for j, column in enumerate(columns):
                if isinstance(column, g.Text):
                    g.refuse_nan_text(column, ctx, j, "which this imputer refuses")
                elif g.np_dtype(column).kind == "f":
                    ok = tf.logical_not(tf.reduce_any(tf.math.is_nan(column)))
                    ctx.build.check(
                        ok, f"{ctx.path}: input column {ctx.quoted(j)} contains {g.NOT_FINITE}"
                    )
        out = [impute(columns[j], value, int(j)) for j, value in zip(plan.keep, fills, strict=True)]
        for j in plan.flagged if plan.flagged is not None else ():
            column = columns[j]
            if isinstance(column, g.Text):
                out.append(g.text_mask(column, missing))
            else:
                out.append(g.numeric_mask(tf.cast(column, np.float64), missing))
        return g.TensorFrame(frame.n_rows, columns=out)

    return Node(run, n_out)


# ---------------------------------------------------------------------------------------
# MissingIndicator
# ---------------------------------------------------------------------------------------


class Indicator(NamedTuple):
    """The fitted constants of a MissingIndicator.

    Attributes:
        missing: the missing-value marker.
        features: the columns indicated (those with missing values at fit, or all).
        subset: only `features` are output (``features='missing-only'``, not all columns).
        new_refused: a column without missing values at fit may not have any now.
    """

    missing: Any
    features: np.ndarray
    subset: bool
    new_refused: bool


def _indicator_plan(obj: MissingIndicator, ctx: Context) -> Indicator:
    if getattr(obj, "_precomputed", False):
        raise NoForm("a MissingIndicator fitted on a precomputed mask")
    features = np.asarray(obj.features_)
    only_missing = obj.features == "missing-only"
    return Indicator(
        _checked_missing(obj.missing_values),
        features,
        only_missing and features.size < obj._n_features,
        only_missing and bool(obj.error_on_new),
    )


def _indicator_rules(obj: MissingIndicator) -> StepRules:
    missing = obj.missing_values
    handled = missing is None or r.is_scalar_nan(missing)
    return StepRules(missing=HANDLED if handled else REFUSED, infinity_refused=True)


def _indicator_replay(plan: Indicator, ctx: Context) -> Node:
    missing, nan_missing = plan.missing, r.is_scalar_nan(plan.missing)
    fitted = set(plan.features.tolist())
    unfitted = [j for j in range(ctx.n_in) if j not in fitted]
    why = r.INFINITY if nan_missing else "the indicator treats another value as missing."

    def column_mask(column: r.Column, j: int) -> np.ndarray:
        if column.dtype.kind == "O":
            if not nan_missing:  # check_array refuses NaN in object data here
                r.refuse_not_finite(r.per_value(r.not_finite, column), ctx, why, j=j)
        else:
            column = r.dense(column)
            bad = r.infinite(column) if nan_missing else r.not_finite(column)
            r.refuse_not_finite(bad, ctx, why, j=j)
        return r.per_value(lambda v: r.missing_mask(v, missing), column)

    def run(frame: Any) -> Any:
        if frame.is_array:
            x = frame.full()
            columns = [x[:, j] for j in range(ctx.n_in)]
        else:
            columns = frame.columns()
        masks = [column_mask(column, j) for j, column in enumerate(columns)]
        mask = np.column_stack(masks) if masks else np.zeros((frame.n_rows, 0), dtype=bool)
        if plan.new_refused and unfitted:
            new = [j for j in unfitted if mask[:, j].any()]
            if new:
                raise r.SchemaError(
                    f"Input {ctx.label(new[0])} has missing values, but had none when "
                    f"MissingIndicator(error_on_new=True) was fitted (columns {new}). Fill "
                    "them before predicting, or refit the indicator on data with missing "
                    "values there.",
                    column=ctx.column(new[0]),
                )
        return r.ArrayFrame.of(mask[:, plan.features] if plan.subset else mask)

    return Node(run, int(plan.features.size) if plan.subset else ctx.n_in)


def _indicator_graph(plan: Indicator, ctx: Context) -> Node:
    missing, nan_missing = plan.missing, g.is_nan(plan.missing)
    features = plan.features
    unfitted = [j for j in range(ctx.n_in) if j not in set(features.tolist())]

    def run(frame: Any) -> Any:
        tf = g.tf()
        masks = []
        for j, column in enumerate(frame.columns()):
            if isinstance(column, g.Text):
                if not nan_missing:
                    g.refuse_nan_text(column, ctx, j, "which this step refuses")
                masks.append(g.text_mask(column, missing))
            else:
                x = column if g.np_dtype(column).kind in "iuf" else tf.cast(column, np.float64)
                g.check_column(ctx, x, j, allow_nan=nan_missing)
                masks.append(g.numeric_mask(x, missing))
        mask = tf.stack(masks, axis=1) if masks else g.empty(frame.n_rows, bool)
        if plan.new_refused and unfitted:
            new = tf.reduce_any(tf.gather(mask, unfitted, axis=1), axis=0)
            ctx.build.check(
                tf.logical_not(tf.reduce_any(new)),
                f"{ctx.path}: columns that had no missing values in fit have some now "
                "(MissingIndicator(error_on_new=True)); column positions:",
                tf.boolean_mask(tf.constant(unfitted), new),
            )
        if plan.subset:
            mask = tf.gather(mask, features, axis=1)
        return g.TensorFrame.of(mask)

    return Node(run, int(features.size) if plan.subset else ctx.n_in)


KINDS = (
    Kind(
        SimpleImputer,
        FAMILY,
        state=("_fit_dtype", "_fill_dtype", "statistics_", "indicator_"),
        plan=_imputer_plan,
        replay=_imputer_replay,
        graph=_imputer_graph,
        rules=_simple_imputer_rules,
        decode="inverse_transform",
        lacks={
            "decode_graph": "inverse_transform needs the indicator columns, which a model "
            "does not output"
        },
        exported="`mean`, `median`, `most_frequent`, `constant`; `missing_values` NaN, None, "
        "a number or a string; `add_indicator`; `keep_empty_features`; numeric and object "
        "(text) data",
    ),
    Kind(
        MissingIndicator,
        FAMILY,
        state=("_precomputed", "_n_features", "features_"),
        plan=_indicator_plan,
        replay=_indicator_replay,
        graph=_indicator_graph,
        rules=_indicator_rules,
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="`features='missing-only'`/`'all'`, `error_on_new`",
    ),
)
