"""The TensorFlow forms of the steps: each kind's ``graph`` facet over a shared machinery.

This is the export edge's one interface into the steps: `compile_graph` turns a fitted
step into a `Node` of TensorFlow ops, `decode_graph` a postprocess step into a function of
the model's scores, and `GraphBuild` collects what building them found: the parts without a
TensorFlow form, the lookup tables to track, and the ``Assert`` ops that replace
scikit-learn's refusals (inside a graph nothing can be refused before TensorFlow sees the
data). Every form replays scikit-learn's arithmetic in scikit-learn's dtypes; the NumPy
replay (`bundle.steps.replay`) is the reference, and parity is within 1e-6.

TensorFlow is imported on first use, never at import time.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .frame import Frame
from .kinds import Context, Node, NoForm
from .naming import class_path
from .runtime import postprocess_mode

# The export edge's interface: everything it needs from the steps.
__all__ = [
    "SAMPLE",
    "TEXT",
    "Context",
    "GraphBuild",
    "Lookup",
    "NoForm",
    "TensorFrame",
    "Text",
    "compile_graph",
    "decode_graph",
    "decodes_labels",
    "first_argmax",
    "graph_classes",
    "np_dtype",
    "postprocess_mode",
    "score_shape",
    "tf",
]

SAMPLE = 5  # offending values shown in a failed check's message
TEXT = np.dtype(object)
INFINITY = "infinity, which the step refuses (like scikit-learn; NaN is allowed)"
NOT_FINITE = "NaN or infinity, which the step refuses (like scikit-learn)"


def tf() -> Any:
    """The tensorflow module (imported on first use, after pyarrow: see `import_keras`)."""
    import sys

    module = sys.modules.get("tensorflow")
    if module is not None:
        return module
    from ..model import import_keras

    import_keras()  # pyarrow before TensorFlow: see bundle.model.import_keras
    import tensorflow

    return tensorflow


# ---------------------------------------------------------------------------------------
# Values: text columns, dense frames, sparse blocks
# ---------------------------------------------------------------------------------------


@dataclass
class Text:
    """A text column: its strings, where it is missing, and which missing value it holds.

    `sentinel` is the Python value scikit-learn would see in the missing rows: "nan" (a
    float NaN) or "none" (None).
    """

    values: Any
    missing: Any
    sentinel: str = "nan"

    dtype = TEXT


def np_dtype(value: Any) -> np.dtype:
    """The numpy dtype of a tensor, a `Text` column, a tf.DType or a numpy dtype."""
    if isinstance(value, Text):
        return TEXT
    if isinstance(value, np.dtype):
        return value
    dtype = getattr(value, "dtype", value)
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


class TensorFrame(Frame):
    """A TensorFlow frame: a list of columns (tensors or `Text`), or one 2-D tensor."""

    __slots__ = ()

    @classmethod
    def of(cls, array: Any) -> TensorFrame:
        return cls(tf().shape(array)[0], array=array)

    @property
    def has_text(self) -> bool:
        return self._columns is not None and any(isinstance(c, Text) for c in self._columns)

    def _stack(self, columns: list[Any]) -> Any:
        t = tf()
        if any(isinstance(c, Text) for c in columns):
            raise NoForm("text columns where numbers are needed")
        dtype = self.dtype
        if not columns:
            return t.zeros(t.stack([self.n_rows, 0]), dtype=dtype)
        return t.stack([t.cast(c, dtype) for c in columns], axis=1)

    def _take_array(self, indices: list[int] | slice) -> TensorFrame:
        if isinstance(indices, slice):
            return TensorFrame(self.n_rows, array=self._array[:, indices])
        return TensorFrame(self.n_rows, array=tf().gather(self._array, indices, axis=1))

    def _dtype_of(self, column: Any) -> np.dtype:
        return np_dtype(column)

    def to(self, dtype: Any) -> Any:
        return tf().cast(self.full(), np.dtype(dtype))


class SparseBlock:
    """A `tf.SparseTensor` block (a text vectorizer's output), densified where needed."""

    def __init__(self, tensor: Any, n_rows: Any):
        self.tensor = tensor
        self.n_rows = n_rows

    @property
    def width(self) -> int:
        return int(self.tensor.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return np_dtype(self.tensor)

    @property
    def has_text(self) -> bool:
        return False

    def columns(self) -> list[Any]:
        return self.frame().columns()

    def frame(self) -> TensorFrame:
        return TensorFrame.of(tf().sparse.to_dense(self.tensor))

    def full(self) -> Any:
        return self.frame().full()

    def to(self, dtype: Any) -> Any:
        return tf().cast(self.full(), np.dtype(dtype))


def floats(frame: Frame) -> Any:
    """check_array's conversion: float32/float64 stay, anything else becomes float64."""
    x = frame.full()
    return x if np_dtype(x) in (np.float32, np.float64) else tf().cast(x, np.float64)


def numbers_of(frame: Frame) -> Any:
    """check_array(dtype=None): ints and floats stay, anything else becomes float64."""
    x = frame.full()
    return x if np_dtype(x).kind in "iuf" else tf().cast(x, np.float64)


def inplace(op: Callable[[Any, Any], Any], x: Any, param: Any) -> Any:
    """``x op= param`` as NumPy runs it: computed in the common dtype, kept in x's."""
    t = tf()
    wide = np.result_type(np_dtype(x), np.asarray(param).dtype)
    result = op(t.cast(x, wide), t.constant(np.asarray(param, dtype=wide)))
    return t.cast(result, np_dtype(x))


def scalar(value: Any, like: Any) -> Any:
    """`value` as a constant of `like`'s dtype (``tf.cast`` of a Python float rounds it
    through float32 first)."""
    return tf().constant(value, dtype=like.dtype)


def constant(array: Any, dtype: Any = None) -> Any:
    """A constant of `array` in `dtype` (numpy's cast, not TensorFlow's)."""
    array = np.asarray(array)
    return tf().constant(array if dtype is None else array.astype(np.dtype(dtype)))


def stack(blocks: list[Any], n_rows: Any, dtype: Any) -> Any:
    t = tf()
    if not blocks:
        return t.zeros(t.stack([n_rows, 0]), dtype=np.dtype(dtype))
    return blocks[0] if len(blocks) == 1 else t.concat(blocks, axis=1)


def empty(n_rows: Any, dtype: Any) -> Any:
    t = tf()
    return t.zeros(t.stack([n_rows, 0]), dtype=np.dtype(dtype))


# ---------------------------------------------------------------------------------------
# The build: problems, tables and Assert ops
# ---------------------------------------------------------------------------------------


def unquoted(text: str) -> str:
    """A check's message with backticks for quotes: TensorFlow prints ' as \\'."""
    return text.replace("'", "`")


@dataclass
class GraphBuild:
    """Everything collected while building the graph."""

    missing_token: str
    problems: list[str] = field(default_factory=list)
    tables: list[Any] = field(default_factory=list)  # tracked by the exported module
    text_constants: dict[str, str] = field(default_factory=dict)  # value -> where
    checks: list[Any] = field(default_factory=list)  # Assert ops of the current trace

    def problem(self, where: str, what: str) -> None:
        text = f"{where}: {what}"
        if text not in self.problems:
            self.problems.append(text)

    def check(self, ok: Any, message: str, *data: Any) -> None:
        """Fail the call unless `ok`, with `message` and a sample of `data`."""
        t = tf()
        shown = [unquoted(message), *(unquoted(d) if isinstance(d, str) else d for d in data)]
        # The raw op: tf.debugging.Assert wraps each check in a cond, which costs more per
        # call than computing the few values the message shows.
        self.checks.append(t.raw_ops.Assert(condition=ok, data=shown, summarize=SAMPLE))

    def note_text(self, values: Sequence[Any], where: str) -> None:
        for value in values:
            if isinstance(value, str):
                self.text_constants.setdefault(value, where)


def refuse(ctx: Context, bad: Any, why: str) -> None:
    """Fail the call where the 2-D mask `bad` is set, naming the first such column."""
    t = tf()
    names = [unquoted(ctx.quoted(j)) for j in range(ctx.n_in)] or ["?"]
    first = t.argmax(t.cast(t.reduce_any(bad, axis=0), t.int32), output_type=t.int32)
    ctx.build.check(
        t.logical_not(t.reduce_any(bad)),
        f"{ctx.path}: input column",
        t.gather(t.constant(names), t.minimum(first, len(names) - 1)),
        f"contains {why}",
    )


def refuse_infinite(x: Any, ctx: Context) -> None:
    if np_dtype(x).kind == "f":
        refuse(ctx, tf().math.is_inf(x), INFINITY)


def refuse_not_finite(x: Any, ctx: Context) -> None:
    t = tf()
    if np_dtype(x).kind == "f":
        refuse(ctx, t.logical_not(t.math.is_finite(x)), NOT_FINITE)


def check_column(ctx: Context, column: Any, j: int, *, allow_nan: bool) -> None:
    """Fail the call where column `j` (a numeric tensor) is infinite (or NaN, if refused)."""
    t = tf()
    if isinstance(column, Text) or np_dtype(column).kind != "f":
        return
    bad = t.math.is_inf(column) if allow_nan else t.logical_not(t.math.is_finite(column))
    ctx.build.check(
        t.logical_not(t.reduce_any(bad)),
        f"{ctx.path}: input column {ctx.quoted(j)} contains "
        + (INFINITY if allow_nan else NOT_FINITE),
    )


def elementwise(run: Callable[[Any], Any], ctx: Context) -> Node:
    """A scaler: NaN passes through, infinity is refused (scikit-learn's allow-nan)."""

    def scaled(frame: Frame) -> TensorFrame:
        x = floats(frame)
        refuse_infinite(x, ctx)
        return TensorFrame.of(run(x))

    return Node(scaled, ctx.n_in)


def finite(run: Callable[[Any], Any], ctx: Context, *, read=None) -> Callable[[Frame], Any]:
    """A step that refuses NaN and infinity (scikit-learn's default check_array)."""
    read = read or floats

    def checked(frame: Frame) -> Any:
        x = read(frame)
        refuse_not_finite(x, ctx)
        out = run(x)
        return out if isinstance(out, (TensorFrame, SparseBlock)) else TensorFrame.of(out)

    return checked


# ---------------------------------------------------------------------------------------
# Missing values
# ---------------------------------------------------------------------------------------


def is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and value != value


def numeric_mask(x: Any, missing: Any) -> Any:
    """scikit-learn's `_get_mask` on a numeric tensor (2-D or 1-D)."""
    t = tf()
    dtype = np_dtype(x)
    if is_nan(missing):
        return t.math.is_nan(x) if dtype.kind == "f" else t.zeros_like(x, dtype=t.bool)
    if missing is None or isinstance(missing, str):
        return t.zeros_like(x, dtype=t.bool)  # a number never equals None or a string
    common = np.result_type(dtype, missing)  # NumPy's rules for a Python scalar
    return t.equal(t.cast(x, common), t.constant(missing, dtype=common))


def text_mask(column: Text, missing: Any) -> Any:
    """`_get_mask` on a text column: NaN matches NaN, None matches None, a string itself."""
    t = tf()
    if is_nan(missing):
        return column.missing if column.sentinel == "nan" else t.zeros_like(column.missing)
    if missing is None:
        return column.missing if column.sentinel == "none" else t.zeros_like(column.missing)
    if isinstance(missing, str):
        return t.logical_and(t.logical_not(column.missing), t.equal(column.values, missing))
    return t.zeros_like(column.missing)


def refuse_nan_text(column: Text, ctx: Context, j: int, why: str) -> None:
    """An object column holding NaN where the step refuses NaN (`x != x`)."""
    t = tf()
    if column.sentinel == "nan":
        ctx.build.check(
            t.logical_not(t.reduce_any(column.missing)),
            f"{ctx.path}: input column {ctx.quoted(j)} has missing values (NaN), {why}",
        )


# ---------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------


class Lookup:
    """Category -> index for one encoder feature, -1 for unseen (`replay.Lookup`).

    Text goes through a `tf.lookup.StaticHashTable` (built now, tracked by the module);
    numbers through a sorted search. NaN and None match only a NaN or None category.
    """

    def __init__(self, categories: Sequence[Any], ctx: Context, label: str):
        t = tf()
        items = list(categories)
        self.nan_code = next((k for k, c in enumerate(items) if is_nan(c)), -1)
        self.none_code = next((k for k, c in enumerate(items) if c is None), -1)
        text = [(k, c) for k, c in enumerate(items) if isinstance(c, str)]
        nums = [
            (k, c)
            for k, c in enumerate(items)
            if isinstance(c, (numbers.Number, np.number, np.bool_))
            and not isinstance(c, str)
            and not is_nan(c)
        ]
        if text and nums:
            ctx.build.problem(ctx.path, f"{label} mixes text and number categories")
        self.table = None
        if text:
            ctx.build.note_text([c for _, c in text], ctx.path)
            keys = t.constant([c for _, c in text], dtype=t.string)
            codes = t.constant([k for k, _ in text], dtype=t.int64)
            self.table = t.lookup.StaticHashTable(
                t.lookup.KeyValueTensorInitializer(keys, codes), default_value=-1
            )
            ctx.build.tables.append(self.table)
        self.known = self.order = None
        if nums:
            values = np.asarray([c for _, c in nums])
            if values.dtype.kind == "b":
                values = values.astype(np.int64)
            order = np.argsort(values, kind="stable")
            self.known = values[order]
            self.order = np.asarray([k for k, _ in nums], dtype=np.int64)[order]

    def __call__(self, column: Any) -> Any:
        t = tf()
        if isinstance(column, Text):
            if self.table is not None:
                codes = self.table.lookup(column.values)
            else:
                codes = t.fill(t.shape(column.values, out_type=t.int64), np.int64(-1))
            code = self.nan_code if column.sentinel == "nan" else self.none_code
            return t.where(column.missing, t.constant(code, t.int64), codes)
        n = t.shape(column, out_type=t.int64)
        codes = t.fill(n, t.constant(-1, t.int64))
        if self.known is not None:
            common = np.result_type(self.known.dtype, np_dtype(column))
            if common.kind == "b":
                common = np.dtype(np.int64)
            values = t.cast(column, common)
            known = t.constant(self.known.astype(common))
            at = t.minimum(
                t.searchsorted(known, values, side="left", out_type=t.int64),
                len(self.known) - 1,
            )
            found = t.equal(t.gather(known, at), values)
            codes = t.where(found, t.gather(t.constant(self.order), at), codes)
        if self.nan_code >= 0 and np_dtype(column).kind == "f":
            codes = t.where(t.math.is_nan(column), t.constant(self.nan_code, t.int64), codes)
        return codes


def describe_unknown(column: Any, bad: Any) -> Any:
    values = column.values if isinstance(column, Text) else column
    return tf().boolean_mask(values, bad)[:SAMPLE]


def encoder_codes(
    obj: Any, lookups: list[Lookup], frame: Frame, ctx: Context, *, refuse_unknown: bool
) -> list[Any]:
    """Category codes per feature; unseen values fail the call when `refuse_unknown`."""
    t = tf()
    codes = []
    for j, lookup in enumerate(lookups):
        column = frame.column(j)
        check_column(ctx, column, j, allow_nan=True)
        code = lookup(column)
        if refuse_unknown:
            bad = code < 0
            ctx.build.check(
                t.logical_not(t.reduce_any(bad)),
                f"Column {ctx.quoted(j)} has values {type(obj).__name__}(handle_unknown='error') "
                f"never saw ({ctx.path}; a missing value shows as the missing token):",
                describe_unknown(column, bad),
            )
        codes.append(code)
    return codes


def gather_unseen_last(table: np.ndarray, codes: Any) -> Any:
    """``table[codes]`` where code -1 (unseen) takes the table's last entry."""
    t = tf()
    n = len(table) - 1
    return t.gather(t.constant(table), t.where(codes < 0, t.constant(n, t.int64), codes))


def first_argmax(scores: Any) -> Any:
    """``np.argmax(scores, axis=-1)``: the first maximum, or the first NaN if any."""
    t = tf()
    k = int(scores.shape[-1])
    positions = t.range(k, dtype=t.int64)
    big = t.constant(k, t.int64)
    if np_dtype(scores).kind == "f":
        is_missing = t.math.is_nan(scores)
        first_nan = t.reduce_min(t.where(is_missing, positions, big), axis=-1)
        top = t.reduce_max(t.where(is_missing, t.cast(-np.inf, scores.dtype), scores), axis=-1)
        first_top = t.reduce_min(t.where(scores == top[..., None], positions, big), axis=-1)
        return t.where(first_nan < big, first_nan, first_top)
    top = t.reduce_max(scores, axis=-1)
    return t.reduce_min(t.where(scores == top[..., None], positions, big), axis=-1)


def score_shape(shape: Sequence[int | None]) -> tuple[int, ...] | None:
    dims = list(shape)[1:]
    return None if any(d is None for d in dims) else tuple(int(d) for d in dims)


# ---------------------------------------------------------------------------------------
# Compiling: one step through its kind
# ---------------------------------------------------------------------------------------


def _nothing(frame: Any) -> Any:
    return frame


def compile_graph(obj: Any, ctx: Context) -> Node:
    """The TensorFlow node of fitted `obj`; a part without one is recorded in ``ctx.build``.

    Args:
        obj: a fitted step.
        ctx: its context; ``ctx.build`` is the `GraphBuild` collecting problems.

    Returns:
        The node (a placeholder of width 0 when the step has no form: the build's problems
        then say why, and the caller refuses the export).
    """
    from .registry import KINDS, find_kind

    kind = find_kind(type(obj))
    if kind is None or kind.graph is None:
        why = kind.why_not("graph") if kind is not None else None
        known = ", ".join(sorted(k.cls.__name__ for k in KINDS.values() if k.graph))
        text = f"{class_path(obj)} has no TensorFlow form" + (
            f" ({why})" if why else f"; known: {known}"
        )
        ctx.build.problem(ctx.path, text)
        return Node(_nothing, 0)
    try:
        return kind.graph(kind.plan(obj, ctx) if kind.plan else obj, ctx)
    except NoForm as exc:
        ctx.build.problem(ctx.path, str(exc))
        return Node(_nothing, 0)


def decode_graph(obj: Any, mode: str, shape: Sequence[int | None], where: str, build: GraphBuild):
    """The TensorFlow form of postprocess step `obj`: scores -> labels or values, or None
    (then ``build.problems`` says why)."""
    from .registry import KINDS, find_kind

    kind = find_kind(type(obj))
    if kind is None or kind.decode_graph is None:
        why = kind.why_not("decode_graph") if kind is not None else None
        known = ", ".join(sorted(k.cls.__name__ for k in KINDS.values() if k.decode_graph))
        build.problem(
            where,
            f"{class_path(obj)} has no TensorFlow form"
            + (f" as a postprocess step ({why})" if why else f"; known: {known}"),
        )
        return None
    return kind.decode_graph(obj, mode, shape, where, build)


def graph_classes() -> dict[str, list[str]]:
    """The scikit-learn classes with a TensorFlow form, by stage."""
    from .registry import KINDS

    return {
        "preprocess": sorted(k.cls.__name__ for k in KINDS.values() if k.graph),
        "postprocess": sorted(k.cls.__name__ for k in KINDS.values() if k.decode_graph),
    }


def decodes_labels(obj: Any) -> bool:
    """Whether postprocess step `obj` returns labels (a class decoder) rather than values."""
    from .registry import find_kind

    kind = find_kind(type(obj))
    return kind is not None and kind.family == "labels"
