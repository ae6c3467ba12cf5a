"""Kinds of the imputers and the missing-value indicator."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
from sklearn.experimental import enable_iterative_imputer  # noqa: F401 -- IterativeImputer
from sklearn.impute import IterativeImputer, KNNImputer, MissingIndicator, SimpleImputer

from . import graph as g
from . import replay as r
from .kinds import HANDLED, REFUSED, Context, Kind, Node, NoForm, StepRules, ValueCodec
from .linear import LinearPrediction

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


# ---------------------------------------------------------------------------------------
# KNNImputer
# ---------------------------------------------------------------------------------------


def _model_imputer_rules(obj: Any) -> StepRules:
    """KNNImputer and IterativeImputer: numeric, NaN imputed, infinity refused."""
    if not _imputes_nan(obj):
        return StepRules(missing=REFUSED, infinity_refused=True)
    valid = getattr(obj, "_valid_mask", None)
    if valid is None:
        valid = ~np.asarray(getattr(obj, "_is_empty_feature", np.zeros(0, bool)))
    dropped = not obj.keep_empty_features and not np.all(valid)
    return StepRules(missing=HANDLED, infinity_refused=True, keeps_columns=not dropped)


class Neighbours(NamedTuple):
    """The fitted constants of a KNNImputer: the training data it takes donors from."""

    missing: Any
    fit_x: np.ndarray
    fit_mask: np.ndarray
    valid: np.ndarray
    n_neighbors: int
    distance_weights: bool
    keep_empty: bool
    flagged: np.ndarray | None


def _knn_plan(obj: KNNImputer, ctx: Context) -> Neighbours:
    if obj.metric != "nan_euclidean" or obj.weights not in ("uniform", "distance"):
        raise NoForm(
            f"metric={obj.metric!r}, weights={obj.weights!r}: only 'nan_euclidean' with "
            "'uniform' or 'distance' weights is replayed"
        )
    return Neighbours(
        _checked_missing(obj.missing_values),
        obj._fit_X,
        obj._mask_fit_X,
        obj._valid_mask,
        int(obj.n_neighbors),
        obj.weights == "distance",
        bool(obj.keep_empty_features),
        obj.indicator_.features_ if obj.add_indicator else None,
    )


def _knn_weights(distances: np.ndarray, distance: bool) -> np.ndarray | None:
    """`sklearn.neighbors._base._get_weights` for 'uniform' and 'distance'."""
    if not distance:
        return None
    with np.errstate(divide="ignore"):
        weights = 1.0 / distances
    inf_mask = np.isinf(weights)
    inf_row = np.any(inf_mask, axis=1)
    weights[inf_row] = inf_mask[inf_row]
    return weights


def _knn_replay(plan: Neighbours, ctx: Context) -> Node:
    from sklearn.metrics import pairwise_distances_chunked

    missing, fit_x, fit_mask, valid = plan.missing, plan.fit_x, plan.fit_mask, plan.valid
    nan_missing = r.is_scalar_nan(missing)
    ensure = "allow-nan" if nan_missing else True
    why = r.INFINITY if nan_missing else "the imputer treats another value as missing."
    n_kept = ctx.n_in if plan.keep_empty else int(valid.sum())
    n_out = n_kept + (0 if plan.flagged is None else plan.flagged.size)

    def calc_impute(dist: np.ndarray, n_neighbors: int, fit_col: np.ndarray, mask_col):
        donors_idx = np.argpartition(dist, n_neighbors - 1, axis=1)[:, :n_neighbors]
        donors_dist = dist[np.arange(donors_idx.shape[0])[:, None], donors_idx]
        weight_matrix = _knn_weights(donors_dist, plan.distance_weights)
        if weight_matrix is not None:
            weight_matrix[np.isnan(weight_matrix)] = 0.0
        else:
            weight_matrix = np.ones_like(donors_dist)
            weight_matrix[np.isnan(donors_dist)] = 0.0
        donors = np.ma.array(fit_col.take(donors_idx), mask=mask_col.take(donors_idx))
        return np.ma.average(donors, axis=1, weights=weight_matrix).data

    def run(frame: Any) -> Any:
        x = r.own_floats(frame)
        r.refuse_not_finite(r.infinite(x) if nan_missing else r.not_finite(x), ctx, why)
        mask = r.missing_mask(x, missing)
        indicator = None if plan.flagged is None else mask[:, plan.flagged]
        if np.any(mask[:, valid]):
            row_missing_idx = np.flatnonzero(mask[:, valid].any(axis=1))
            non_missing_fit = np.logical_not(fit_mask)
            dist_idx_map = np.zeros(x.shape[0], dtype=int)
            dist_idx_map[row_missing_idx] = np.arange(row_missing_idx.shape[0])

            def process_chunk(dist_chunk: np.ndarray, start: int) -> None:
                row_missing_chunk = row_missing_idx[start : start + len(dist_chunk)]
                for col in range(x.shape[1]):
                    if not valid[col]:
                        continue
                    col_mask = mask[row_missing_chunk, col]
                    if not np.any(col_mask):
                        continue
                    (potential_donors_idx,) = np.nonzero(non_missing_fit[:, col])
                    receivers_idx = row_missing_chunk[np.flatnonzero(col_mask)]
                    dist_subset = dist_chunk[dist_idx_map[receivers_idx] - start][
                        :, potential_donors_idx
                    ]
                    all_nan_dist_mask = np.isnan(dist_subset).all(axis=1)
                    all_nan_receivers_idx = receivers_idx[all_nan_dist_mask]
                    if all_nan_receivers_idx.size:
                        col_mean = np.ma.array(fit_x[:, col], mask=fit_mask[:, col]).mean()
                        x[all_nan_receivers_idx, col] = col_mean
                        if len(all_nan_receivers_idx) == len(receivers_idx):
                            continue
                        receivers_idx = receivers_idx[~all_nan_dist_mask]
                        dist_subset = dist_chunk[dist_idx_map[receivers_idx] - start][
                            :, potential_donors_idx
                        ]
                    n_neighbors = min(plan.n_neighbors, len(potential_donors_idx))
                    x[receivers_idx, col] = calc_impute(
                        dist_subset,
                        n_neighbors,
                        fit_x[potential_donors_idx, col],
                        fit_mask[potential_donors_idx, col],
                    )

            for _ in pairwise_distances_chunked(
                x[row_missing_idx, :],
                fit_x,
                metric="nan_euclidean",
                missing_values=missing,
                ensure_all_finite=ensure,
                reduce_func=process_chunk,
            ):
                pass
        if plan.keep_empty:
            out = x
            out[:, ~valid] = 0
        else:
            out = x[:, valid]
        return r.ArrayFrame.of(out if indicator is None else np.hstack((out, indicator)))

    return Node(run, n_out)


def _graph_nan_euclidean(x: Any, x_missing: Any, y: np.ndarray, y_missing: np.ndarray) -> Any:
    """`sklearn.metrics.pairwise.nan_euclidean_distances(x, y)` in float64, step by step."""
    tf = g.tf()
    xz = tf.where(x_missing, tf.zeros_like(x), x)
    yz = tf.constant(np.where(y_missing, 0.0, y))
    xx = tf.reduce_sum(xz * xz, axis=1)[:, None]
    yy = tf.reduce_sum(yz * yz, axis=1)[None, :]
    distances = -2 * tf.linalg.matmul(xz, yz, transpose_b=True) + xx + yy
    distances = tf.maximum(distances, 0.0)
    y_missing_f = tf.constant(y_missing.astype(np.float64))
    x_missing_f = tf.cast(x_missing, tf.float64)
    distances -= tf.linalg.matmul(xz * xz, y_missing_f, transpose_b=True)
    distances -= tf.linalg.matmul(x_missing_f, yz * yz, transpose_b=True)
    distances = tf.maximum(distances, 0.0)
    present = tf.linalg.matmul(1.0 - x_missing_f, 1.0 - y_missing_f, transpose_b=True)
    distances = tf.where(tf.equal(present, 0.0), np.nan, distances)
    distances = distances / tf.maximum(present, 1.0) * float(y.shape[1])
    return tf.sqrt(distances)


def _knn_graph(plan: Neighbours, ctx: Context) -> Node:
    missing, fit_x, fit_mask, valid = plan.missing, plan.fit_x, plan.fit_mask, plan.valid
    nan_missing = g.is_nan(missing)
    n_kept = ctx.n_in if plan.keep_empty else int(valid.sum())
    n_out = n_kept + (0 if plan.flagged is None else plan.flagged.size)
    means = [
        np.ma.array(fit_x[:, c], mask=fit_mask[:, c]).mean() if valid[c] else 0.0
        for c in range(ctx.n_in)
    ]

    def impute_column(x: Any, mask: Any, distances: Any, col: int) -> Any:
        tf = g.tf()
        donors = np.flatnonzero(~fit_mask[:, col])
        k = min(plan.n_neighbors, donors.size)
        dist = tf.gather(distances, donors, axis=1)
        all_nan = tf.reduce_all(tf.math.is_nan(dist), axis=1)
        # NaN distances sort last, as in np.argpartition.
        key = tf.where(tf.math.is_nan(dist), np.inf, dist)
        _, order = tf.math.top_k(-key, k=k)
        chosen = tf.gather(dist, order, batch_dims=1)
        values = tf.gather(tf.constant(fit_x[donors, col]), order)
        if plan.distance_weights:
            weights = 1.0 / chosen
            inf_mask = tf.math.is_inf(weights)
            inf_row = tf.reduce_any(inf_mask, axis=1, keepdims=True)
            weights = tf.where(inf_row, tf.cast(inf_mask, tf.float64), weights)
            weights = tf.where(tf.math.is_nan(weights), 0.0, weights)
        else:
            weights = tf.where(tf.math.is_nan(chosen), 0.0, tf.ones_like(chosen))
        average = tf.reduce_sum(weights * values, axis=1) / tf.reduce_sum(weights, axis=1)
        imputed = tf.where(all_nan, means[col], average)
        return tf.where(mask[:, col], imputed, x[:, col])

    def run(frame: Any) -> Any:
        tf = g.tf()
        x = g.floats(frame)
        dtype = g.np_dtype(x)
        if nan_missing:
            g.refuse_infinite(x, ctx)
        else:
            g.refuse_not_finite(x, ctx)
        mask = g.numeric_mask(x, missing)
        wide = tf.cast(x, np.float64)
        distances = _graph_nan_euclidean(wide, mask, fit_x, fit_mask)
        columns = []
        for col in range(ctx.n_in):
            if not valid[col]:
                if plan.keep_empty:
                    columns.append(tf.zeros_like(wide[:, col]))
                continue
            if np.all(fit_mask[:, col]):
                columns.append(wide[:, col])
                continue
            columns.append(impute_column(wide, mask, distances, col))
        out = tf.cast(tf.stack(columns, axis=1), dtype) if columns else g.empty(frame.n_rows, dtype)
        if plan.flagged is not None:
            flags = tf.cast(tf.gather(mask, plan.flagged, axis=1), dtype)
            out = tf.concat([out, flags], axis=1)
        return g.TensorFrame.of(out)

    return Node(run, n_out)


# ---------------------------------------------------------------------------------------
# IterativeImputer
# ---------------------------------------------------------------------------------------


def _triplets_state(sequence: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "feat_idx": int(t.feat_idx),
            "neighbor_feat_idx": np.asarray(t.neighbor_feat_idx),
            "estimator": t.estimator,
        }
        for t in sequence
    ]


def _triplets(state: list[dict[str, Any]]) -> list[Any]:
    from sklearn.impute._iterative import _ImputerTriplet

    return [
        _ImputerTriplet(
            np.intp(item["feat_idx"]), np.asarray(item["neighbor_feat_idx"]), item["estimator"]
        )
        for item in state
    ]


def _random_state_state(state: Any) -> Any:
    if not isinstance(state, np.random.RandomState):
        return state
    _, keys, position, has_gauss, cached = state.get_state()
    return {"keys": keys, "position": int(position), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}  # fmt: skip


def _random_state(state: Any) -> Any:
    if not isinstance(state, dict):
        return state
    generator = np.random.RandomState()
    keys = np.asarray(state["keys"], dtype=np.uint32)
    generator.set_state(
        ("MT19937", keys, state["position"], state["has_gauss"], state["cached_gaussian"])
    )
    return generator


class Iteration(NamedTuple):
    """The fitted constants of an IterativeImputer.

    Attributes:
        missing: the missing-value marker.
        initial: the initial imputer's plan.
        empty: the features that were all missing at fit.
        keep_empty: they are kept (``keep_empty_features``).
        sequence: ``(feature, neighbours, linear prediction)`` in imputation order.
        low: the lower clip of each feature; high: the upper one.
        rounds: ``n_iter_``.
        flagged: the indicator's features, or None.
    """

    missing: Any
    initial: Imputation
    empty: np.ndarray
    keep_empty: bool
    sequence: list[tuple[int, np.ndarray, LinearPrediction]]
    low: np.ndarray
    high: np.ndarray
    rounds: int
    flagged: np.ndarray | None


def _iterative_plan(obj: IterativeImputer, ctx: Context) -> Iteration:
    from .registry import find_kind

    if obj.sample_posterior:
        raise NoForm(
            "sample_posterior=True draws new random values at every call: no replay gives "
            "scikit-learn's numbers"
        )
    sequence = []
    for triplet in obj.imputation_sequence_:
        kind = find_kind(type(triplet.estimator))
        if kind is None or kind.family != "linear" or kind.plan is None:
            raise NoForm(
                f"its estimator {type(triplet.estimator).__name__} is not a linear regressor "
                "with a kind (BayesianRidge, ARDRegression, LinearRegression, Ridge, Lasso, "
                "ElasticNet)"
            )
        plan = kind.plan(triplet.estimator, ctx)
        if np.ndim(plan.coef) != 1:
            raise NoForm(f"{type(triplet.estimator).__name__} with a 2-D coef_")
        sequence.append((int(triplet.feat_idx), np.asarray(triplet.neighbor_feat_idx), plan))
    n_kept = ctx.n_in - (0 if obj.keep_empty_features else int(obj._is_empty_feature.sum()))
    return Iteration(
        _checked_missing(obj.missing_values),
        _imputer_plan(obj.initial_imputer_, ctx),
        np.asarray(obj._is_empty_feature),
        bool(obj.keep_empty_features),
        sequence,
        np.broadcast_to(obj._min_value, (n_kept,)),
        np.broadcast_to(obj._max_value, (n_kept,)),
        int(obj.n_iter_),
        obj.indicator_.features_ if obj.add_indicator else None,
    )


def _iterative_width(plan: Iteration, ctx: Context) -> int:
    kept = ctx.n_in if plan.keep_empty else int((~plan.empty).sum())
    return kept + (0 if plan.flagged is None else plan.flagged.size)


def _iterative_replay(plan: Iteration, ctx: Context) -> Node:
    missing = plan.missing
    nan_missing = r.is_scalar_nan(missing)
    why = r.INFINITY if nan_missing else "the imputer treats another value as missing."
    initial = plan.initial
    kept = slice(None) if initial.keep.size == ctx.n_in else initial.keep

    def run(frame: Any) -> Any:
        x = np.asfortranarray(r.floats(frame))  # validate_data(order="F")
        r.refuse_not_finite(r.infinite(x) if nan_missing else r.not_finite(x), ctx, why)
        complete_mask = r.missing_mask(x, missing)
        filled = np.asfortranarray(
            np.where(complete_mask[:, kept], initial.fill.astype(x.dtype, copy=False), x[:, kept])
        )
        mask = complete_mask.copy()
        if not plan.keep_empty:
            xt = x[:, ~plan.empty]
            mask = mask[:, ~plan.empty]
        else:
            mask[:, plan.empty] = False
            xt = x.copy()
            xt[:, plan.empty] = filled[:, plan.empty]
        indicator = None if plan.flagged is None else complete_mask[:, plan.flagged]
        if plan.rounds != 0 and not np.all(mask):
            for feature, neighbours, linear in plan.sequence:
                rows = mask[:, feature]
                if np.sum(rows) == 0:
                    continue
                x_test = filled[:, neighbours][rows]
                predicted = x_test @ linear.coef + linear.intercept
                predicted = np.clip(predicted, plan.low[feature], plan.high[feature])
                filled[rows, feature] = predicted
            filled[~mask] = xt[~mask]
        return r.ArrayFrame.of(filled if indicator is None else np.hstack((filled, indicator)))

    return Node(run, _iterative_width(plan, ctx))


def _iterative_graph(plan: Iteration, ctx: Context) -> Node:
    missing = plan.missing
    nan_missing = g.is_nan(missing)
    initial = plan.initial

    def run(frame: Any) -> Any:
        tf = g.tf()
        x = g.floats(frame)
        dtype = g.np_dtype(x)
        if nan_missing:
            g.refuse_infinite(x, ctx)
        else:
            g.refuse_not_finite(x, ctx)
        complete_mask = g.numeric_mask(x, missing)
        fill = g.constant(initial.fill, dtype)
        columns = [
            tf.where(complete_mask[:, j], fill[k], x[:, j]) for k, j in enumerate(initial.keep)
        ]
        kept = [j for j in range(ctx.n_in) if plan.keep_empty or not plan.empty[j]]
        mask = [
            tf.zeros_like(complete_mask[:, j]) if plan.empty[j] else complete_mask[:, j]
            for j in kept
        ]
        if plan.rounds != 0:
            for feature, neighbours, linear in plan.sequence:
                x_test = tf.stack([columns[int(n)] for n in neighbours], axis=1)
                common = np.result_type(dtype, linear.coef.dtype)
                predicted = tf.linalg.matvec(tf.cast(x_test, common), g.constant(linear.coef))
                predicted = predicted + g.constant(linear.intercept, common)
                low, high = float(plan.low[feature]), float(plan.high[feature])
                predicted = tf.clip_by_value(predicted, low, high)
                columns[feature] = tf.where(
                    mask[feature], tf.cast(predicted, dtype), columns[feature]
                )
        out = tf.stack(columns, axis=1) if columns else g.empty(frame.n_rows, dtype)
        if plan.flagged is not None:
            flags = tf.cast(tf.gather(complete_mask, plan.flagged, axis=1), dtype)
            out = tf.concat([out, flags], axis=1)
        return g.TensorFrame.of(out)

    return Node(run, _iterative_width(plan, ctx))


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
    Kind(
        KNNImputer,
        FAMILY,
        state=("_fit_X", "_mask_fit_X", "_valid_mask", "indicator_"),
        plan=_knn_plan,
        replay=_knn_replay,
        graph=_knn_graph,
        rules=_model_imputer_rules,
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="the stored training rows; `nan_euclidean` distances, `uniform`/`distance` "
        "weights, `add_indicator`, `keep_empty_features`",
    ),
    Kind(
        IterativeImputer,
        FAMILY,
        state=(
            "_estimator",
            "_is_empty_feature",
            "_max_value",
            "_min_value",
            "imputation_sequence_",
            "indicator_",
            "initial_imputer_",
            "n_features_with_missing_",
            "n_iter_",
            "random_state_",
        ),
        values={
            "imputation_sequence_": ValueCodec(_triplets_state, _triplets),
            "random_state_": ValueCodec(_random_state_state, _random_state),
        },
        plan=_iterative_plan,
        replay=_iterative_replay,
        graph=_iterative_graph,
        rules=_model_imputer_rules,
        lacks={"decode": NOT_A_DECODER, "decode_graph": NOT_A_DECODER},
        exported="the initial imputation, then each fitted linear regressor in order "
        "(clipped to `min_value`/`max_value`); `add_indicator`; not `sample_posterior`",
    ),
)
