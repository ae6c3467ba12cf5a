"""Compiled, vectorized replay of fitted scikit-learn transformers.

`compile_replay` turns a fitted transformer into a plan of precomputed arrays (means and
scales, category -> output-column tables, bin edges, column index lists) once; each call
then runs plain NumPy with none of scikit-learn's per-call validation. The numbers are
scikit-learn's: the same float operations in the same order and dtype (bit-identical,
float32 input staying float32) and exactly the same one-hot and ordinal codes, including
for NaN, None and unseen categories.

Three ideas make it fast. A DataFrame is split into columns once, without building
Series. A large string column is factorized (codes into its few distinct values), so an
imputer and an encoder work on the distinct values and gather by code. A one-hot block
stays "lazy" (the output column of each row and feature) until it is scattered straight
into the final output, which is allocated once.

Deliberate differences from ``obj.transform``:

- the result is always a dense 2-D array of the requested dtype;
- 0-row input gives a ``(0, n_outputs)`` array (scikit-learn refuses it);
- a DataFrame is read by column name, so column order and extra columns do not matter;
- SimpleImputer does not repeat its "Skipping features without any observed values"
  warning on every call.

Example:
    >>> replay = compile_replay(fitted_column_transformer)
    >>> x = replay(frame)   # == fitted_column_transformer.transform(frame), densified
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from ..errors import SchemaError, bullet_list

__all__ = [
    "FAST_CLASSES",
    "compile_replay",
    "imputer_statistics",
    "one_hot_columns",
    "ordinal_values",
    "polynomial_plan",
]

MAX_SHOWN = 5
FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
INFINITY = "this step allows NaN but, like scikit-learn, refuses infinity."
# Below this many rows a dict lookup per value beats factorizing a column first.
FACTORIZE_MIN_ROWS = 1024
# What factorize marks as missing and scikit-learn also treats as missing (NaN is a float).
MISSING_TYPES = frozenset({type(None), float, np.float64, np.float32})


class _NoFastForm(Exception):
    """Raised while compiling: some part has no vectorized form."""


def _is_scalar_nan(value: Any) -> bool:
    """scikit-learn's `is_scalar_nan` (only floats can be NaN), without its ABC check."""
    return isinstance(value, (float, np.floating)) and value != value


# ---------------------------------------------------------------------------------------
# Values passed between nodes: a frame of columns (or one 2-D array), or a lazy one-hot.
# ---------------------------------------------------------------------------------------


class _Factorized:
    """A column stored as codes into its distinct values: ``uniques[codes]``."""

    __slots__ = ("codes", "uniques")

    def __init__(self, codes: np.ndarray, uniques: np.ndarray):
        self.codes = codes
        self.uniques = uniques

    @property
    def dtype(self) -> np.dtype:
        return self.uniques.dtype

    def dense(self) -> np.ndarray:
        return self.uniques[self.codes]

    def map(self, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``function(column)`` computed on the distinct values only."""
        return function(self.uniques)[self.codes]


Column = np.ndarray | _Factorized


def _dense(column: Column) -> np.ndarray:
    return column.dense() if isinstance(column, _Factorized) else column


def _per_value(function: Callable[[np.ndarray], np.ndarray], column: Column) -> np.ndarray:
    return column.map(function) if isinstance(column, _Factorized) else function(column)


class _Frame:
    """A node's input or output: columns (as read from a DataFrame) or one 2-D array."""

    __slots__ = ("_array", "_columns", "n_rows")

    def __init__(self, n_rows: int, *, columns: list[Any] | None = None, array: Any = None):
        self.n_rows = n_rows
        self._columns = columns
        self._array = array

    @classmethod
    def of(cls, array: np.ndarray) -> _Frame:
        return cls(array.shape[0], array=array)

    @property
    def width(self) -> int:
        return self._array.shape[1] if self._columns is None else len(self._columns)

    @property
    def dtype(self) -> np.dtype:
        if self._columns is None:
            return self._array.dtype
        return np.result_type(*(c.dtype for c in self._columns)) if self._columns else np.float64

    def column(self, j: int) -> Column:
        return self._array[:, j] if self._columns is None else self._columns[j]

    def full(self) -> np.ndarray:
        if self._columns is None:
            return self._array
        if not self._columns:
            return np.empty((self.n_rows, 0))
        return np.column_stack([_dense(c) for c in self._columns])

    def take(self, indices: list[int] | slice) -> _Frame:
        if self._columns is None:
            return _Frame(self.n_rows, array=self._array[:, indices])
        if isinstance(indices, slice):
            return _Frame(self.n_rows, columns=self._columns[indices])
        return _Frame(self.n_rows, columns=[self._columns[j] for j in indices])

    def frame(self) -> _Frame:
        return self

    def write(self, out: np.ndarray, start: int) -> None:
        """Copy the frame into ``out[:, start:start + width]``."""
        if self._columns is None:
            out[:, start : start + self.width] = self._array
            return
        for k, column in enumerate(self._columns):
            out[:, start + k] = _dense(column)

    def to(self, dtype: np.dtype) -> np.ndarray:
        return np.asarray(self.full(), dtype=dtype)


class _OneHot:
    """A one-hot block kept as the output column of each (row, feature), -1 for none."""

    __slots__ = ("dtype", "targets", "width")

    def __init__(self, targets: np.ndarray, width: int, dtype: Any):
        self.targets = targets
        self.width = width
        self.dtype = np.dtype(dtype)

    @property
    def n_rows(self) -> int:
        return self.targets.shape[0]

    def write(self, out: np.ndarray, start: int) -> None:
        """Set the ones inside ``out[:, start:start + width]``, which must be zero."""
        n, stride = self.targets.shape[0], out.shape[1]
        flat = self.targets + (np.arange(n) * stride + start)[:, None]
        out.reshape(-1)[flat[self.targets >= 0]] = 1

    def to(self, dtype: np.dtype) -> np.ndarray:
        out = np.zeros((self.n_rows, self.width), dtype=dtype)
        self.write(out, 0)
        return out

    def frame(self) -> _Frame:
        return _Frame.of(self.to(self.dtype))


Value = _Frame | _OneHot


def _floats(frame: _Frame) -> np.ndarray:
    """The frame as floats the way check_array converts them: float32 stays float32,
    anything else becomes float64 (None becomes NaN)."""
    x = frame.full()
    return x if x.dtype in FLOATS else np.asarray(x, dtype=np.float64)


def _inplace(op: np.ufunc, x: np.ndarray, param: Any) -> np.ndarray:
    """``x op= param`` as scikit-learn runs it: computed in the wider type, kept in x's."""
    return op(x, param).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------
# Nodes: one compiled transformer. `numeric` is True, False, or None (= as its input).
# ---------------------------------------------------------------------------------------


@dataclass
class _Node:
    run: Callable[[_Frame], Value]
    n_out: int
    numeric: bool | None = True


@dataclass(frozen=True)
class _Context:
    """What a node knows about its input at compile time."""

    n_in: int
    names: list[str] | None
    numeric: bool | None

    def name(self, j: int) -> str:
        return f"column {j}" + (f" ({self.names[j]!r})" if self.names else "")

    def column(self, j: int) -> str | None:
        return self.names[j] if self.names else None


def _names_after(obj: Any, context: _Context) -> list[str] | None:
    """Output names of a step, only to name columns in later error messages."""
    try:
        return [str(n) for n in obj.get_feature_names_out(context.names)]
    except Exception:  # any step without names: messages then use positions
        return None


def _elementwise(run: Callable[[np.ndarray], np.ndarray], context: _Context) -> _Node:
    """A scaler: NaN passes through, infinity is refused (scikit-learn's allow-nan)."""

    def scaled(frame: _Frame) -> Value:
        x = _floats(frame)
        _refuse_not_finite(np.isinf(x), context, INFINITY)
        return _Frame.of(run(x))

    return _Node(scaled, context.n_in)


def _standard_scaler(obj: StandardScaler, context: _Context) -> _Node:
    mean = obj.mean_ if obj.with_mean else None
    scale = obj.scale_ if obj.with_std else None

    def run(x: np.ndarray) -> np.ndarray:
        if mean is not None:
            x = _inplace(np.subtract, x, mean.astype(x.dtype))
        return x if scale is None else _inplace(np.divide, x, scale.astype(x.dtype))

    return _elementwise(run, context)


def _min_max_scaler(obj: MinMaxScaler, context: _Context) -> _Node:
    scale, offset = obj.scale_, obj.min_
    low, high = obj.feature_range

    def run(x: np.ndarray) -> np.ndarray:
        x = _inplace(np.add, _inplace(np.multiply, x, scale), offset)
        return np.clip(x, x.dtype.type(low), x.dtype.type(high)) if obj.clip else x

    return _elementwise(run, context)


def _max_abs_scaler(obj: MaxAbsScaler, context: _Context) -> _Node:
    scale = obj.scale_

    def run(x: np.ndarray) -> np.ndarray:
        x = _inplace(np.divide, x, scale)
        return np.clip(x, x.dtype.type(-1), x.dtype.type(1)) if obj.clip else x

    return _elementwise(run, context)


def _robust_scaler(obj: RobustScaler, context: _Context) -> _Node:
    center = obj.center_ if obj.with_centering else None
    scale = obj.scale_ if obj.with_scaling else None

    def run(x: np.ndarray) -> np.ndarray:
        if center is not None:
            x = _inplace(np.subtract, x, center)
        return x if scale is None else _inplace(np.divide, x, scale)

    return _elementwise(run, context)


# -- SimpleImputer ------------------------------------------------------------------------


def _missing_mask(x: np.ndarray, missing_values: Any) -> np.ndarray:
    """scikit-learn's `_get_dense_mask`: where `x` holds `missing_values`."""
    if not _is_scalar_nan(missing_values):
        return np.asarray(x == missing_values, dtype=bool)
    if x.dtype.kind == "f":
        return np.isnan(x)
    if x.dtype.kind in "iu":
        return np.zeros(x.shape, dtype=bool)
    return x != x  # NaN is the only value unequal to itself; None is not missing here


def _not_finite(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f":
        return ~np.isfinite(x)
    return x != x if x.dtype.kind == "O" else np.zeros(x.shape, dtype=bool)


def _infinite(x: np.ndarray) -> np.ndarray:
    return np.isinf(x) if x.dtype.kind == "f" else np.zeros(x.shape, dtype=bool)


def _refuse_not_finite(bad: np.ndarray, context: _Context, why: str, *, j: int = -1) -> None:
    """scikit-learn refuses NaN and infinity where a step cannot handle them.

    `bad` is a 2-D mask, or the 1-D mask of column `j`.
    """
    if not bad.any():
        return
    if bad.ndim == 2:
        j = int(np.flatnonzero(bad.any(axis=0))[0])
    raise SchemaError(
        f"Input {context.name(j)} contains NaN or infinity: {why}", column=context.column(j)
    )


def imputer_statistics(obj: SimpleImputer, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """The kept input columns and their fill values (all-missing columns are dropped)."""
    stats = obj.statistics_
    if obj.keep_empty_features:
        return np.arange(n_in), stats.astype(obj._fill_dtype)
    keep = np.flatnonzero(~_missing_mask(stats, np.nan))
    return keep, stats[keep].astype(obj._fill_dtype)


def _simple_imputer(obj: SimpleImputer, context: _Context) -> _Node:
    missing = obj.missing_values
    if not (missing is None or isinstance(missing, (numbers.Number, str))):
        raise _NoFastForm  # pandas.NA and other sentinels: let scikit-learn handle them
    keep, fill = imputer_statistics(obj, context.n_in)
    flagged = obj.indicator_.features_ if obj.add_indicator else None
    n_out = keep.size + (0 if flagged is None else flagged.size)
    check = None if _is_scalar_nan(missing) else "the imputer treats another value as missing."
    if obj._fit_dtype.kind == "O":
        return _Node(_object_imputer(missing, keep, fill, flagged, check, context), n_out, False)
    read = _floats if obj.strategy in ("mean", "median") else _numbers
    kept = slice(None) if keep.size == context.n_in else keep

    def run(frame: _Frame) -> Value:
        x = read(frame)
        _refuse_not_finite(_not_finite(x) if check else _infinite(x), context, check or INFINITY)
        mask = _missing_mask(x, missing)
        out = np.where(mask[:, kept], fill.astype(x.dtype, copy=False), x[:, kept])
        return _Frame.of(out if flagged is None else np.hstack((out, mask[:, flagged])))

    return _Node(run, n_out)


def _numbers(frame: _Frame) -> np.ndarray:
    """Numbers as they come (int stays int), as check_array(dtype=None) leaves them."""
    x = frame.full()
    return x if x.dtype.kind in "iuf" else np.asarray(x, dtype=np.float64)


def _object_imputer(missing, keep, fill, flagged, check, context) -> Callable[[_Frame], Value]:
    """Column by column, so factorized columns are imputed on their distinct values only."""

    def as_objects(column: Column) -> Column:
        if isinstance(column, _Factorized) or column.dtype.kind == "O":
            return column
        return np.asarray(column, dtype=object)

    def run(frame: _Frame) -> Value:
        columns = [as_objects(frame.column(j)) for j in range(context.n_in)]
        if check:
            for j, column in enumerate(columns):
                _refuse_not_finite(_per_value(_not_finite, column), context, check, j=j)
        out: list[Column] = [
            _impute_column(columns[j], missing, value) for j, value in zip(keep, fill, strict=True)
        ]
        if flagged is not None:
            out += [_per_value(lambda v: _missing_mask(v, missing), columns[j]) for j in flagged]
        return _Frame(frame.n_rows, columns=out)

    return run


def _impute_column(column: Column, missing: Any, value: Any) -> Column:
    def fill(values: np.ndarray) -> np.ndarray:
        filled = values.copy()
        filled[_missing_mask(values, missing)] = value
        return filled

    if isinstance(column, _Factorized):
        return _Factorized(column.codes, fill(column.uniques))
    return fill(column)


# -- Categories ---------------------------------------------------------------------------


class _Lookup:
    """Category -> index for one encoder feature, with scikit-learn's missing-value rules.

    Returns -1 for unseen values. None and NaN match only a None or NaN category.
    """

    def __init__(self, categories: np.ndarray):
        items = categories.tolist()
        self.nan_code = next((k for k, c in enumerate(items) if _is_scalar_nan(c)), -1)
        self.table = {c: k for k, c in enumerate(items) if not _is_scalar_nan(c)}
        self.numeric = categories.dtype.kind in "biuf"
        n_known = len(items) - (self.nan_code >= 0)
        self.known = categories[:n_known]  # numeric categories are sorted by np.unique

    def __call__(self, column: Column) -> np.ndarray:
        if isinstance(column, np.ndarray) and column.dtype.kind == "O":
            column = _factorized_if_large(column)
        return _per_value(self._codes, column)

    def _codes(self, values: np.ndarray) -> np.ndarray:
        if self.numeric and values.dtype.kind in "biuf":
            return self._search(values)
        codes = np.fromiter(map(self.table.get, values, repeat(-1)), np.intp, len(values))
        if self.nan_code >= 0:
            unseen = np.flatnonzero(codes < 0).tolist()
            codes[[i for i in unseen if _is_scalar_nan(values[i])]] = self.nan_code
        return codes

    def _search(self, values: np.ndarray) -> np.ndarray:
        known = self.known
        if known.size == 0:
            codes = np.full(len(values), -1, dtype=np.intp)
        else:
            at = np.minimum(np.searchsorted(known, values), known.size - 1)
            codes = np.where(known[at] == values, at, -1)
        if self.nan_code >= 0 and values.dtype.kind == "f":
            codes[np.isnan(values)] = self.nan_code
        return codes


def _unknown_error(encoder: Any, context: _Context, j: int, values: np.ndarray) -> SchemaError:
    unseen = sorted({repr(v) for v in values.tolist()})
    shown = ", ".join(unseen[:MAX_SHOWN]) + (
        f", ... ({len(unseen) - MAX_SHOWN} more)" if len(unseen) > MAX_SHOWN else ""
    )
    return SchemaError(
        f"Found unknown categories [{shown}] in {context.name(j)} during transform: "
        f"{type(encoder).__name__}(handle_unknown='error') knows "
        f"{len(encoder.categories_[j])} categories for it. Map these values to known "
        "categories, or refit the encoder with handle_unknown='ignore' (one-hot) or "
        "'use_encoded_value' (ordinal).",
        problems=[f"unknown categories [{shown}] in {context.name(j)}"],
        column=context.column(j),
    )


def _codes(
    encoder: Any, lookups: list[_Lookup], frame: _Frame, context: _Context
) -> Iterator[tuple[int, np.ndarray]]:
    """Category codes per feature, raising for unseen values when the encoder refuses them."""
    refuse = encoder.handle_unknown == "error"
    for j, lookup in enumerate(lookups):
        column = frame.column(j)
        _refuse_not_finite(_per_value(_infinite, column), context, INFINITY, j=j)
        codes = lookup(column)
        if refuse and (codes < 0).any():
            raise _unknown_error(encoder, context, j, _dense(column)[codes < 0])
        yield j, codes


def _infrequent(encoder: Any, j: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not encoder._infrequent_enabled:
        return None, None
    return encoder._default_to_infrequent_mappings[j], encoder._infrequent_indices[j]


def one_hot_columns(obj: OneHotEncoder, j: int, offset: int) -> np.ndarray:
    """Output column of each category of feature `j` (last entry: unseen), -1 for none."""
    mapping, infrequent = _infrequent(obj, j)
    grouped = np.arange(len(obj.categories_[j])) if mapping is None else np.asarray(mapping)
    drops = obj._drop_idx_after_grouping
    drop = None if drops is None else drops[j]

    def column(group: int) -> int:
        if drop is None:
            return offset + group
        return -1 if group == drop else offset + group - (group > drop)

    to_infrequent = infrequent is not None and obj.handle_unknown in ("infrequent_if_exist", "warn")
    unseen = column(int(grouped[infrequent[0]])) if to_infrequent else -1
    return np.array([column(int(g)) for g in grouped] + [unseen], dtype=np.intp)


def _one_hot_warning(obj: OneHotEncoder) -> str | None:
    """The warning scikit-learn gives for unseen values, or None when it gives none."""
    if obj.handle_unknown == "warn" or (
        obj.handle_unknown == "infrequent_if_exist" and obj.drop is not None
    ):
        return "These unknown categories will be encoded as the infrequent category."
    if obj.handle_unknown == "ignore" and obj.drop is not None:
        return "These unknown categories will be encoded as all zeros"
    return None


def _one_hot_encoder(obj: OneHotEncoder, context: _Context) -> _Node:
    lookups = [_Lookup(cats) for cats in obj.categories_]
    offsets = np.cumsum([0, *obj._n_features_outs])
    tables = [one_hot_columns(obj, j, int(offsets[j])) for j in range(len(lookups))]
    width, warning = int(offsets[-1]), _one_hot_warning(obj)

    def run(frame: _Frame) -> Value:
        targets = np.empty((frame.n_rows, len(tables)), dtype=np.intp)
        with_unknown = []
        for j, codes in _codes(obj, lookups, frame, context):
            targets[:, j] = tables[j][codes]
            if warning and (codes < 0).any():
                with_unknown.append(j)
        if with_unknown:
            message = f"Found unknown categories in columns {with_unknown} during transform. "
            warnings.warn(message + warning, UserWarning, stacklevel=4)
        return _OneHot(targets, width, obj.dtype)

    return _Node(run, width)


def ordinal_values(obj: OrdinalEncoder, j: int) -> np.ndarray:
    """Encoded value of each category of feature `j` (last entry: unseen)."""
    mapping, _ = _infrequent(obj, j)
    missing = obj._missing_indices.get(j)
    values = [
        obj.encoded_missing_value if k == missing else (k if mapping is None else mapping[k])
        for k in range(len(obj.categories_[j]))
    ]
    unseen = obj.unknown_value if obj.handle_unknown == "use_encoded_value" else 0
    return np.array([*values, unseen], dtype=obj.dtype)


def _ordinal_encoder(obj: OrdinalEncoder, context: _Context) -> _Node:
    lookups = [_Lookup(cats) for cats in obj.categories_]
    tables = [ordinal_values(obj, j) for j in range(len(lookups))]

    def run(frame: _Frame) -> Value:
        out = np.empty((frame.n_rows, len(tables)), dtype=obj.dtype)
        for j, codes in _codes(obj, lookups, frame, context):
            out[:, j] = tables[j][codes]
        return _Frame.of(out)

    return _Node(run, len(tables))


# -- Numeric expansions -------------------------------------------------------------------


def _kbins_discretizer(obj: KBinsDiscretizer, context: _Context) -> _Node:
    inner = [edges[1:-1] for edges in obj.bin_edges_]
    offsets = np.cumsum([0, *obj.n_bins_])
    one_hot = obj.encode != "ordinal"

    def run(frame: _Frame) -> Value:
        x = _floats(frame) if obj.dtype is None else np.asarray(frame.full(), dtype=obj.dtype)
        _refuse_not_finite(_not_finite(x), context, "KBinsDiscretizer cannot bin it.")
        bins = np.empty(x.shape, dtype=np.intp)
        for j, edges in enumerate(inner):
            bins[:, j] = np.searchsorted(edges, x[:, j], side="right")
        if one_hot:
            return _OneHot(bins + offsets[:-1], int(offsets[-1]), x.dtype)
        return _Frame.of(bins.astype(x.dtype))

    return _Node(run, int(offsets[-1]) if one_hot else context.n_in)


def polynomial_plan(obj: PolynomialFeatures, n_features: int) -> list[tuple[int, ...]]:
    """scikit-learn's column bookkeeping, run once: (start, end, feature, out_start, out_end)."""
    current = 1 if obj.include_bias else 0
    index = [*range(current, current + n_features), current + n_features]
    current += n_features
    plan = []
    for _ in range(2, obj._max_degree + 1):
        new_index, end = [], index[-1]
        for feature in range(n_features):
            start = index[feature]
            new_index.append(current)
            if obj.interaction_only:
                start += index[feature + 1] - index[feature]
            stop = current + end - start
            if stop <= current:
                break
            plan.append((start, end, feature, current, stop))
            current = stop
        new_index.append(current)
        index = new_index
    return plan


def _polynomial_features(obj: PolynomialFeatures, context: _Context) -> _Node:
    n_features, bias = context.n_in, int(obj.include_bias)
    plan = polynomial_plan(obj, n_features)
    n_full, n_out = obj._n_out_full, obj.n_output_features_

    def expand(x: np.ndarray) -> np.ndarray:
        xp = np.empty((x.shape[0], n_full), dtype=x.dtype)
        xp[:, :bias] = 1
        if obj._max_degree == 0:
            return xp
        xp[:, bias : bias + n_features] = x
        for start, end, feature, out_start, out_end in plan:
            np.multiply(xp[:, start:end], x[:, feature : feature + 1], out=xp[:, out_start:out_end])
        if obj._min_degree <= 1:
            return xp
        return np.hstack((xp[:, :bias], xp[:, n_full - n_out + bias :]))

    def run(frame: _Frame) -> Value:
        x = _floats(frame)
        _refuse_not_finite(_not_finite(x), context, "PolynomialFeatures cannot multiply it.")
        return _Frame.of(expand(x))

    return _Node(run, n_out)


def _function_transformer(obj: FunctionTransformer, context: _Context) -> _Node:
    func, kwargs = obj.func, obj.kw_args or {}
    if func is None:
        return _Node(lambda frame: frame, context.n_in, context.numeric)
    if not isinstance(func, np.ufunc):
        raise _NoFastForm  # any other function may rely on receiving a DataFrame

    def run(frame: _Frame) -> Value:
        x = frame.full()
        if obj.validate:
            x = np.asarray(x, dtype=np.float64) if x.dtype.kind == "O" else x
            _refuse_not_finite(_not_finite(x), context, "FunctionTransformer(validate=True).")
        return _Frame.of(func(x, **kwargs))

    return _Node(run, context.n_in)


# -- Composites ---------------------------------------------------------------------------


def _pipeline(obj: Pipeline, context: _Context) -> _Node:
    runs = []
    for _, step in obj.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        node = _compile(step, context)
        runs.append(node.run)
        numeric = context.numeric if node.numeric is None else node.numeric
        context = _Context(node.n_out, _names_after(step, context), numeric)

    def run(frame: _Frame) -> Value:
        value: Value = frame
        for step in runs:
            value = step(value.frame())
        return value

    return _Node(run, context.n_in, context.numeric)


def _block(trans: Any, context: _Context, indices: list[int]) -> _Node:
    names = [context.names[i] for i in indices] if context.names else None
    sub = _Context(len(indices), names, context.numeric)
    if isinstance(trans, str) and trans == "passthrough":
        return _Node(lambda frame: frame, sub.n_in, sub.numeric)
    return _compile(trans, sub)


def _selection(indices: list[int]) -> list[int] | slice:
    """A slice when the indices are a contiguous run: slicing an array is then a view."""
    if indices and indices == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return indices


def _weighted(node: _Node, weight: float | None) -> Callable[[_Frame], Value]:
    if weight is None:
        return node.run
    return lambda frame: _Frame.of(node.run(frame).frame().full() * weight)


def _stacked(blocks: list[tuple[Any, Callable[[_Frame], Value], int]], nodes: list[_Node]):
    """Run each (selection, run, width) block on its columns; hstack like scikit-learn.

    The output is allocated once and each block written into it, so a one-hot block is
    never materialized on its own.
    """
    width = sum(n for *_, n in blocks)
    flags = [node.numeric for node in nodes]
    numeric = False if False in flags else (None if None in flags else True)

    def run(frame: _Frame) -> Value:
        parts = [block(frame if cols is None else frame.take(cols)) for cols, block, _ in blocks]
        if len(parts) == 1:
            return parts[0]
        dtype = np.result_type(*(part.dtype for part in parts)) if parts else np.float64
        lazy = any(isinstance(part, _OneHot) for part in parts)
        out = (np.zeros if lazy else np.empty)((frame.n_rows, width), dtype=dtype)
        start = 0
        for part in parts:
            part.write(out, start)
            start += part.width
        return _Frame.of(out)

    return _Node(run, width, numeric)


def _column_transformer(obj: ColumnTransformer, context: _Context) -> _Node:
    weights = obj.transformer_weights or {}
    blocks, nodes = [], []
    for name, trans, _ in obj.transformers_:
        indices = [int(i) for i in obj._transformer_to_input_indices[name]]
        if (isinstance(trans, str) and trans == "drop") or not indices:
            continue
        node = _block(trans, context, indices)
        nodes.append(node)
        blocks.append((_selection(indices), _weighted(node, weights.get(name)), node.n_out))
    return _stacked(blocks, nodes)


def _feature_union(obj: FeatureUnion, context: _Context) -> _Node:
    weights = obj.transformer_weights or {}
    blocks, nodes = [], []
    for name, trans in obj.transformer_list:
        if isinstance(trans, str) and trans == "drop":
            continue
        node = _block(trans, context, list(range(context.n_in)))
        nodes.append(node)
        blocks.append((None, _weighted(node, weights.get(name)), node.n_out))
    return _stacked(blocks, nodes)


COMPILERS: dict[type, Callable[[Any, _Context], _Node]] = {
    StandardScaler: _standard_scaler,
    MinMaxScaler: _min_max_scaler,
    MaxAbsScaler: _max_abs_scaler,
    RobustScaler: _robust_scaler,
    SimpleImputer: _simple_imputer,
    OneHotEncoder: _one_hot_encoder,
    OrdinalEncoder: _ordinal_encoder,
    KBinsDiscretizer: _kbins_discretizer,
    PolynomialFeatures: _polynomial_features,
    FunctionTransformer: _function_transformer,
    Pipeline: _pipeline,
    ColumnTransformer: _column_transformer,
    FeatureUnion: _feature_union,
}
FAST_CLASSES = tuple(sorted(cls.__name__ for cls in COMPILERS))


def _compile(obj: Any, context: _Context) -> _Node:
    compiler = COMPILERS.get(type(obj))
    if compiler is None:
        raise _NoFastForm
    return compiler(obj, context)


# ---------------------------------------------------------------------------------------
# Reading the input
# ---------------------------------------------------------------------------------------


def _column_array(df: Any, position: int) -> Any:
    """The stored array of one DataFrame column, without building a Series when possible."""
    try:
        return df._get_column_array(position)  # pandas-internal, ~50x faster than df[name]
    except AttributeError:
        series = df.iloc[:, position]
        return series.to_numpy() if isinstance(series.dtype, np.dtype) else series.array


def _factorized_if_large(values: np.ndarray) -> Column:
    """An object column, factorized when it is long enough for that to pay off."""
    return _factorize_objects(values) if len(values) >= FACTORIZE_MIN_ROWS else values


def _as_column(array: Any) -> Column:
    """One column as scikit-learn sees it: NumPy numbers, nullable numbers as NaN, strings
    as Python objects; large string columns factorized."""
    if isinstance(array, np.ndarray):
        return _factorized_if_large(array) if array.dtype.kind == "O" else array
    if array.dtype.kind in "iufb":
        return array.to_numpy(dtype=np.float64, na_value=np.nan)
    if len(array) >= FACTORIZE_MIN_ROWS:
        return _factorize_extension(array)
    return array.to_numpy(dtype=object)


def _factorize_extension(array: Any) -> Column:
    """Factorize a pandas string/categorical array; its missing value is its na_value."""
    import pandas as pd

    codes, uniques = pd.factorize(array)
    return _with_missing(codes, np.asarray(uniques, dtype=object), [array.dtype.na_value])


def _factorize_objects(values: np.ndarray) -> Column:
    """Factorize an object column, keeping None and NaN apart as scikit-learn does."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    absent = values[codes < 0].tolist()
    if not absent:
        return _Factorized(codes, uniques)
    if not set(map(type, absent)) <= MISSING_TYPES:
        return values  # pandas.NA, NaT, ...: rare enough to take the per-value path
    not_none = np.fromiter((v is not None for v in absent), bool, len(absent))
    present = ((None, not not_none.all()), (math.nan, bool(not_none.any())))
    markers = [marker for marker, found in present if found]
    return _with_missing(codes, uniques, markers, not_none)


def _with_missing(codes, uniques, markers, not_none=None) -> _Factorized:
    """Give factorize's -1 codes their own distinct values (`markers`) at the end.

    With two markers (None, NaN), `not_none` tells which one each -1 code gets.
    """
    missing = np.flatnonzero(codes < 0)
    if missing.size == 0:
        return _Factorized(codes, uniques)
    all_uniques = np.empty(len(uniques) + len(markers), dtype=object)
    all_uniques[: len(uniques)] = uniques
    for k, marker in enumerate(markers):
        all_uniques[len(uniques) + k] = marker
    codes[missing] = len(uniques) + (not_none if len(markers) == 2 else 0)
    return _Factorized(codes, all_uniques)


def _used_columns(obj: Any, n_in: int) -> list[int]:
    """Input columns `obj` reads: a ColumnTransformer ignores the ones it drops."""
    while isinstance(obj, Pipeline):
        steps = [step for _, step in obj.steps if step is not None and step != "passthrough"]
        if not steps:
            break
        obj = steps[0]
    if not isinstance(obj, ColumnTransformer):
        return list(range(n_in))
    dropped = {name for name, trans, _ in obj.transformers_ if _is_drop(trans)}
    indices = obj._transformer_to_input_indices
    return sorted({int(i) for name, cols in indices.items() if name not in dropped for i in cols})


def _is_drop(trans: Any) -> bool:
    return isinstance(trans, str) and trans == "drop"


def _reader(obj: Any, n_in: int, names: list[str] | None) -> Callable[[Any], _Frame]:
    """Turn a DataFrame or 2-D array into a frame of the `n_in` columns `obj` was fitted on.

    A DataFrame is read by name (by position if `obj` was fitted on an array); columns
    `obj` never reads are left out as None.
    """
    owner = type(obj).__name__
    used = _used_columns(obj, n_in)

    def read(x: Any) -> _Frame:
        if hasattr(x, "iloc") and getattr(x, "ndim", 0) == 2:
            return read_frame(x)
        array = np.asarray(x)
        if array.ndim != 2 or array.shape[1] != n_in:
            raise SchemaError(
                f"Input has shape {array.shape}, but {owner} expects (n_samples, {n_in}). "
                "Pass a 2-D array with one column per feature, e.g. x.reshape(1, -1) for "
                "one sample.",
                problems=[f"shape {array.shape} instead of (n_samples, {n_in})"],
            )
        return _Frame.of(array)

    def read_frame(df: Any) -> _Frame:
        positions = _positions(df, owner, used, names, n_in)
        columns: list[Any] = [None] * n_in
        for j, position in zip(used, positions, strict=True):
            columns[j] = _as_column(_column_array(df, position))
        return _Frame(len(df), columns=columns)

    return read


def _positions(df: Any, owner: str, used: list[int], names: list[str] | None, n_in: int):
    """Where the `used` columns sit in `df`; by name when `names` is known."""
    if names is None:
        if df.shape[1] != n_in:
            raise SchemaError(
                f"Input has {df.shape[1]} columns, but {owner} was fitted without column "
                f"names on {n_in} and reads them by position. Pass exactly those columns.",
                problems=[f"{df.shape[1]} columns instead of {n_in}"],
            )
        return used
    get_loc, positions, missing = df.columns.get_loc, [], []
    for j in used:
        try:
            position = get_loc(names[j])
        except KeyError:
            missing.append(names[j])
            continue
        if not isinstance(position, int):
            raise SchemaError(
                f"Input has several columns named {names[j]!r}; {owner} needs exactly one.",
                column=names[j],
            )
        positions.append(position)
    if missing:
        raise SchemaError(
            f"Input is missing {len(missing)} of the columns {owner} reads:\n"
            f"{bullet_list(missing)}\nAdd these columns; their order does not matter.",
            problems=[f"missing column {name!r}" for name in missing],
            column=missing[0],
        )
    return positions


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def compile_replay(obj: Any, *, dtype: Any = np.float64) -> Callable[[Any], np.ndarray] | None:
    """Compile fitted `obj` into a function computing ``obj.transform(X)`` densely.

    Args:
        obj: a fitted transformer (see `FAST_CLASSES`), possibly nested in Pipeline,
            ColumnTransformer or FeatureUnion.
        dtype: dtype of the returned arrays.

    Returns:
        ``replay(X) -> ndarray`` of shape ``(n_samples, n_outputs)``, where `X` is a
        DataFrame with the training columns or a 2-D array; or None when some part has
        no fast form or its output is not numeric (call ``obj.transform`` instead).
        Unseen categories under ``handle_unknown='error'`` raise `SchemaError` (a
        ValueError) naming the column and the values.
    """
    n_in = _n_features_in(obj)
    if n_in is None:
        return None
    raw_names = getattr(obj, "feature_names_in_", None)
    names = [str(n) for n in raw_names] if raw_names is not None else None
    try:
        node = _compile(obj, _Context(n_in, names, None))
    except _NoFastForm:
        return None
    if node.numeric is False:
        return None
    dtype, read, run, n_out = np.dtype(dtype), _reader(obj, n_in, names), node.run, node.n_out

    def replay(x: Any) -> np.ndarray:
        frame = read(x)
        out = run(frame).to(dtype)
        if out.shape != (frame.n_rows, n_out):
            raise ValueError(
                f"The compiled replay of {type(obj).__name__} produced shape {out.shape}, "
                f"expected {(frame.n_rows, n_out)}; call its transform() instead."
            )
        return out

    return replay


def _n_features_in(obj: Any) -> int | None:
    try:
        return int(obj.n_features_in_)
    except (AttributeError, TypeError):
        return None
