"""The NumPy replay: fitted steps compiled into vectorized functions, bit-identical to
scikit-learn's ``transform``.

`compile_replay` looks each step's kind up in the registry, extracts its fitted constants
once (the kind's plan) and compiles its replay; each call then runs plain NumPy with none of
scikit-learn's per-call validation. The numbers are scikit-learn's: the same float
operations in the same order and dtype (float32 input staying float32) and exactly the same
codes, including for NaN, None and unseen categories. Where scikit-learn's own summation
order cannot be reproduced (a BLAS product whose blocking depends on the batch), the kind
says so and stays within one ulp.

Three ideas make it fast. A DataFrame is split into columns once, without building
Series. A large string column is factorized (codes into its few distinct values), so an
imputer and an encoder work on the distinct values and gather by code. A one-hot block
(and a sparse one) stays lazy until it is scattered straight into the final output, which
is allocated once: sparse outputs are densified only where the model needs them.

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
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Any

import numpy as np

from ..errors import SchemaError, bullet_list
from .frame import Frame, common_dtype
from .kinds import Context, Node, NoForm

__all__ = [
    "FACTORIZE_MIN_ROWS",
    "ArrayFrame",
    "Factorized",
    "Lookup",
    "OneHot",
    "SparseRows",
    "compile_node",
    "compile_replay",
    "replay_classes",
]

MAX_SHOWN = 5
FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
INFINITY = "this step allows NaN but, like scikit-learn, refuses infinity."
# Below this many rows a dict lookup per value beats factorizing a column first.
FACTORIZE_MIN_ROWS = 1024
# What factorize marks as missing and scikit-learn also treats as missing (NaN is a float).
MISSING_TYPES = frozenset({type(None), float, np.float64, np.float32})


def is_scalar_nan(value: Any) -> bool:
    """scikit-learn's `is_scalar_nan` (only floats can be NaN), without its ABC check."""
    return isinstance(value, (float, np.floating)) and value != value


# ---------------------------------------------------------------------------------------
# Values passed between nodes: a frame of columns (or one 2-D array), a lazy one-hot block,
# or sparse rows.
# ---------------------------------------------------------------------------------------


class Factorized:
    """A column stored as codes into its distinct values: ``uniques[codes]``."""

    __slots__ = ("codes", "uniques")

    def __init__(self, codes: np.ndarray, uniques: np.ndarray):
        self.codes = codes
        self.uniques = uniques

    @property
    def dtype(self) -> np.dtype:
        return self.uniques.dtype

    def __len__(self) -> int:
        return len(self.codes)

    def dense(self) -> np.ndarray:
        return self.uniques[self.codes]

    def map(self, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``function(column)`` computed on the distinct values only."""
        return function(self.uniques)[self.codes]


Column = np.ndarray | Factorized


def dense(column: Column) -> np.ndarray:
    return column.dense() if isinstance(column, Factorized) else column


def per_value(function: Callable[[np.ndarray], np.ndarray], column: Column) -> np.ndarray:
    return column.map(function) if isinstance(column, Factorized) else function(column)


class ArrayFrame(Frame):
    """A NumPy frame: columns as read from a DataFrame, or one 2-D ndarray."""

    __slots__ = ()

    @classmethod
    def of(cls, array: np.ndarray) -> ArrayFrame:
        return cls(array.shape[0], array=array)

    def _stack(self, columns: list[Any]) -> np.ndarray:
        """The columns as one array laid out like ``np.asarray(DataFrame)`` (Fortran order):
        scikit-learn's row sums and BLAS products add in an order that depends on the layout,
        so the replay hands them the layout scikit-learn itself gets from a DataFrame."""
        if not columns:
            return np.empty((self.n_rows, 0))
        arrays = [dense(c) for c in columns]
        dtype = common_dtype([array.dtype for array in arrays])
        out = np.empty((self.n_rows, len(arrays)), dtype=dtype, order="F")
        for j, array in enumerate(arrays):
            out[:, j] = array
        return out

    def _take_array(self, indices: list[int] | slice) -> ArrayFrame:
        return ArrayFrame(self.n_rows, array=self._array[:, indices])

    def _dtype_of(self, column: Any) -> np.dtype:
        return column.dtype

    def write(self, out: np.ndarray, start: int) -> None:
        """Copy the frame into ``out[:, start:start + width]``."""
        if self._columns is None:
            out[:, start : start + self.width] = self._array
            return
        for k, column in enumerate(self._columns):
            out[:, start + k] = dense(column)

    def to(self, dtype: np.dtype) -> np.ndarray:
        return np.asarray(self.full(), dtype=dtype)


class OneHot:
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

    def frame(self) -> ArrayFrame:
        return ArrayFrame.of(self.to(self.dtype))


class SparseRows:
    """A scipy CSR matrix flowing between steps; densified only where a dense input is
    needed (or scattered straight into the final output)."""

    __slots__ = ("matrix",)

    def __init__(self, matrix: Any):
        self.matrix = matrix

    @property
    def n_rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def width(self) -> int:
        return self.matrix.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.matrix.dtype

    def write(self, out: np.ndarray, start: int) -> None:
        """Scatter the stored values into ``out[:, start:start + width]`` (zero there)."""
        matrix = self.matrix
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        out[rows, start + matrix.indices] = matrix.data

    def to(self, dtype: np.dtype) -> np.ndarray:
        out = np.zeros((self.n_rows, self.width), dtype=dtype)
        self.write(out, 0)
        return out

    def frame(self) -> ArrayFrame:
        return ArrayFrame.of(self.matrix.toarray())


Value = ArrayFrame | OneHot | SparseRows


def floats(frame: Frame) -> np.ndarray:
    """The frame as floats the way check_array converts them: float32 stays float32,
    anything else becomes float64 (None becomes NaN)."""
    x = frame.full()
    return x if x.dtype in FLOATS else np.asarray(x, dtype=np.float64)


def own_floats(frame: Frame) -> np.ndarray:
    """`floats(frame)` as an array the step may modify in place: stacked columns are a fresh
    array already; the caller's own 2-D array is copied (scikit-learn's ``copy=True``)."""
    x = floats(frame)
    if frame.is_array and (x is frame.full() or np.shares_memory(x, frame.full())):
        return x.copy()
    return x


def numbers(frame: Frame) -> np.ndarray:
    """Numbers as they come (int stays int), as check_array(dtype=None) leaves them."""
    x = frame.full()
    return x if x.dtype.kind in "iuf" else np.asarray(x, dtype=np.float64)


def inplace(op: np.ufunc, x: np.ndarray, param: Any) -> np.ndarray:
    """``x op= param`` as scikit-learn runs it: computed in the wider type, kept in x's."""
    return op(x, param).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------
# Missing values and refusals
# ---------------------------------------------------------------------------------------


def missing_mask(x: np.ndarray, missing_values: Any) -> np.ndarray:
    """scikit-learn's `_get_dense_mask`: where `x` holds `missing_values`."""
    if not is_scalar_nan(missing_values):
        return np.asarray(x == missing_values, dtype=bool)
    if x.dtype.kind == "f":
        return np.isnan(x)
    if x.dtype.kind in "iu":
        return np.zeros(x.shape, dtype=bool)
    return x != x  # NaN is the only value unequal to itself; None is not missing here


def not_finite(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f":
        return ~np.isfinite(x)
    return x != x if x.dtype.kind == "O" else np.zeros(x.shape, dtype=bool)


def infinite(x: np.ndarray) -> np.ndarray:
    return np.isinf(x) if x.dtype.kind == "f" else np.zeros(x.shape, dtype=bool)


def refuse_not_finite(bad: np.ndarray, context: Context, why: str, *, j: int = -1) -> None:
    """scikit-learn refuses NaN and infinity where a step cannot handle them.

    `bad` is a 2-D mask, or the 1-D mask of column `j`.
    """
    if not bad.any():
        return
    if bad.ndim == 2:
        j = int(np.flatnonzero(bad.any(axis=0))[0])
    raise SchemaError(
        f"Input {context.label(j)} contains NaN or infinity: {why}", column=context.column(j)
    )


def elementwise(run: Callable[[np.ndarray], np.ndarray], context: Context) -> Node:
    """A scaler: NaN passes through, infinity is refused (scikit-learn's allow-nan)."""

    def scaled(frame: Frame) -> Value:
        x = floats(frame)
        refuse_not_finite(np.isinf(x), context, INFINITY)
        return ArrayFrame.of(run(x))

    return Node(scaled, context.n_in)


def finite(
    run: Callable[[np.ndarray], Any], context: Context, why: str, *, read=None
) -> Callable[[Frame], Value]:
    """A step that refuses NaN and infinity (scikit-learn's default check_array).

    `why` ends the refusal's message ("PolynomialFeatures cannot multiply it."); `read`
    turns the frame into an array (default: `floats`); `run` maps it to the output array
    (or to a value).
    """
    read = read or floats

    def checked(frame: Frame) -> Value:
        x = read(frame)
        refuse_not_finite(not_finite(x), context, why)
        out = run(x)
        return ArrayFrame.of(out) if isinstance(out, np.ndarray) else out

    return checked


# ---------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------


class Lookup:
    """Category -> index for one encoder feature, with scikit-learn's missing-value rules.

    Returns -1 for unseen values. None and NaN match only a None or NaN category.
    """

    def __init__(self, categories: np.ndarray):
        items = categories.tolist()
        self.nan_code = next((k for k, c in enumerate(items) if is_scalar_nan(c)), -1)
        self.table = {c: k for k, c in enumerate(items) if not is_scalar_nan(c)}
        self.numeric = categories.dtype.kind in "biuf"
        n_known = len(items) - (self.nan_code >= 0)
        self.known = categories[:n_known]  # numeric categories are sorted by np.unique

    def __call__(self, column: Column) -> np.ndarray:
        if isinstance(column, np.ndarray) and column.dtype.kind == "O":
            column = factorized_if_large(column)
        return per_value(self._codes, column)

    def _codes(self, values: np.ndarray) -> np.ndarray:
        if self.numeric and values.dtype.kind in "biuf":
            return self._search(values)
        codes = np.fromiter(map(self.table.get, values, repeat(-1)), np.intp, len(values))
        if self.nan_code >= 0:
            unseen = np.flatnonzero(codes < 0).tolist()
            codes[[i for i in unseen if is_scalar_nan(values[i])]] = self.nan_code
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


def unknown_error(encoder: Any, context: Context, j: int, values: np.ndarray) -> SchemaError:
    unseen = sorted({repr(v) for v in values.tolist()})
    shown = ", ".join(unseen[:MAX_SHOWN]) + (
        f", ... ({len(unseen) - MAX_SHOWN} more)" if len(unseen) > MAX_SHOWN else ""
    )
    return SchemaError(
        f"Found unknown categories [{shown}] in {context.label(j)} during transform: "
        f"{type(encoder).__name__}(handle_unknown='error') knows "
        f"{len(encoder.categories_[j])} categories for it. Map these values to known "
        "categories, or refit the encoder with handle_unknown='ignore' (one-hot) or "
        "'use_encoded_value' (ordinal).",
        problems=[f"unknown categories [{shown}] in {context.label(j)}"],
        column=context.column(j),
    )


def category_codes(
    encoder: Any, lookups: list[Lookup], frame: Frame, context: Context, *, refuse: bool
) -> Iterator[tuple[int, np.ndarray]]:
    """Category codes per feature, raising for unseen values when `refuse` is set."""
    for j, lookup in enumerate(lookups):
        column = frame.column(j)
        refuse_not_finite(per_value(infinite, column), context, INFINITY, j=j)
        codes = lookup(column)
        if refuse and (codes < 0).any():
            raise unknown_error(encoder, context, j, dense(column)[codes < 0])
        yield j, codes


# ---------------------------------------------------------------------------------------
# Compiling: one step through its kind
# ---------------------------------------------------------------------------------------


def compile_node(obj: Any, context: Context) -> Node:
    """The NumPy node of fitted `obj` (raises `NoForm` when it has none)."""
    from .registry import find_kind

    kind = find_kind(type(obj))
    if kind is None:
        raise NoForm(f"{type(obj).__name__} has no kind")
    if kind.replay is None:
        raise NoForm(kind.why_not("replay") or f"{type(obj).__name__} has no NumPy replay")
    return kind.replay(kind.plan(obj, context) if kind.plan else obj, context)


def replay_classes() -> tuple[str, ...]:
    """Names of the classes with a NumPy replay."""
    from .registry import KINDS

    return tuple(sorted(kind.cls.__name__ for kind in KINDS.values() if kind.replay))


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


def factorized_if_large(values: np.ndarray) -> Column:
    """An object column, factorized when it is long enough for that to pay off."""
    return _factorize_objects(values) if len(values) >= FACTORIZE_MIN_ROWS else values


def _as_column(array: Any) -> Column:
    """One column as scikit-learn sees it: NumPy numbers, nullable numbers as NaN, strings
    as Python objects; large string columns factorized."""
    if isinstance(array, np.ndarray):
        return factorized_if_large(array) if array.dtype.kind == "O" else array
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
        return Factorized(codes, uniques)
    if not set(map(type, absent)) <= MISSING_TYPES:
        return values  # pandas.NA, NaT, ...: rare enough to take the per-value path
    not_none = np.fromiter((v is not None for v in absent), bool, len(absent))
    present = ((None, not not_none.all()), (math.nan, bool(not_none.any())))
    markers = [marker for marker, found in present if found]
    return _with_missing(codes, uniques, markers, not_none)


def _with_missing(codes, uniques, markers, not_none=None) -> Factorized:
    """Give factorize's -1 codes their own distinct values (`markers`) at the end.

    With two markers (None, NaN), `not_none` tells which one each -1 code gets.
    """
    missing = np.flatnonzero(codes < 0)
    if missing.size == 0:
        return Factorized(codes, uniques)
    all_uniques = np.empty(len(uniques) + len(markers), dtype=object)
    all_uniques[: len(uniques)] = uniques
    for k, marker in enumerate(markers):
        all_uniques[len(uniques) + k] = marker
    codes[missing] = len(uniques) + (not_none if len(markers) == 2 else 0)
    return Factorized(codes, all_uniques)


def _used_columns(obj: Any, n_in: int) -> list[int]:
    """Input columns `obj` reads: a ColumnTransformer ignores the ones it drops."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

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


def _reader(obj: Any, n_in: int, names: list[str] | None) -> Callable[[Any], ArrayFrame]:
    """Turn a DataFrame or 2-D array into a frame of the `n_in` columns `obj` was fitted on.

    A DataFrame is read by name (by position if `obj` was fitted on an array); columns
    `obj` never reads are left out as None.
    """
    owner = type(obj).__name__
    used = _used_columns(obj, n_in)

    def read(x: Any) -> ArrayFrame:
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
        return ArrayFrame.of(array)

    def read_frame(df: Any) -> ArrayFrame:
        positions = _positions(df, owner, used, names, n_in)
        columns: list[Any] = [None] * n_in
        for j, position in zip(used, positions, strict=True):
            columns[j] = _as_column(_column_array(df, position))
        return ArrayFrame(len(df), columns=columns)

    return read


def _document_reader(obj: Any) -> Callable[[Any], ArrayFrame]:
    """A text vectorizer on its own reads a 1-D sequence of documents (one column)."""
    owner = type(obj).__name__

    def read(x: Any) -> ArrayFrame:
        if hasattr(x, "iloc") and getattr(x, "ndim", 0) == 2:
            raise SchemaError(
                f"{owner} reads one column of documents; got a table of {x.shape[1]} "
                "columns. Pass the text column alone (df['text']), or put the vectorizer "
                "in a ColumnTransformer that selects it by name.",
                problems=[f"a table of {x.shape[1]} columns instead of documents"],
            )
        if isinstance(x, str):
            raise SchemaError(
                f"{owner} reads a sequence of documents; got one string. Pass [text].",
                problems=["one string instead of a sequence of documents"],
            )
        values = x.to_numpy(dtype=object) if hasattr(x, "to_numpy") else np.asarray(x, object)
        if values.ndim != 1:
            raise SchemaError(
                f"{owner} reads a 1-D sequence of documents; got shape {values.shape}.",
                problems=[f"shape {values.shape} instead of (n_documents,)"],
            )
        return ArrayFrame(len(values), columns=[values])

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
        obj: a fitted transformer with a NumPy replay (see `replay_classes`), possibly
            nested in Pipeline, ColumnTransformer or FeatureUnion.
        dtype: dtype of the returned arrays.

    Returns:
        ``replay(X) -> ndarray`` of shape ``(n_samples, n_outputs)``, where `X` is a
        DataFrame with the training columns or a 2-D array (a text vectorizer on its own:
        a sequence of documents); or None when some part has no replay or its output is
        not numeric (call ``obj.transform`` instead). Unseen categories under
        ``handle_unknown='error'`` raise `SchemaError` (a ValueError) naming the column
        and the values.
    """
    from .compose import reads_documents

    documents = reads_documents(obj)
    n_in = 1 if documents else _n_features_in(obj)
    if n_in is None:
        return None
    raw_names = getattr(obj, "feature_names_in_", None)
    names = [str(n) for n in raw_names] if raw_names is not None else None
    try:
        node = compile_node(obj, Context(n_in, tuple(names) if names else None, type(obj).__name__))
    except NoForm:
        return None
    if node.numeric is False:
        return None
    read = _document_reader(obj) if documents else _reader(obj, n_in, names)
    dtype, run, n_out = np.dtype(dtype), node.run, node.n_out

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
