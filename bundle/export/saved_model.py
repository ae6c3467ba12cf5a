"""The whole pipeline as one TensorFlow graph: raw features in, labels out.

`export_saved_model` writes a TensorFlow SavedModel whose ``serving_default`` signature
replays a bundle's input checks, preprocess steps, model and postprocess steps, so that
TensorFlow Serving (or any process with TensorFlow and nothing else) predicts what
`Bundle.predict` predicts.

Signature
---------
Inputs, one tensor per column of the input contract (tabular bundles), shape ``[None]``:

============================  ========================================================
column kind (training dtype)  input tensor
============================  ========================================================
float (float64 / float32)     ``tf.float64`` / ``tf.float32``; NaN is a missing value
integer (any int width)       ``tf.int64``, range-checked against the training dtype
bool                          ``tf.bool``
string, categorical (text)    ``tf.string``; the missing-value token (default ``""``)
                              stands for a missing value (None/NaN in a DataFrame)
============================  ========================================================

An array bundle takes one tensor named ``input``, shape ``[None, *per-sample shape]``, in
the training dtype. Signature input names are the column names made safe for TensorFlow
(`signature_name`: characters other than ``[A-Za-z0-9_]`` become ``_``, a name that does
not start with a letter gets ``arg_`` in front); two columns that collide (also ignoring
case) are refused.

Outputs: ``scores`` (the model's output) and, with a postprocess step, ``labels`` (class
decoders: LabelEncoder, LabelBinarizer; ``tf.string`` for string classes) or
``predictions`` (target scalers' ``inverse_transform``, in original units).

Semantics
---------
Every fitted step is replayed with scikit-learn's arithmetic, in scikit-learn's dtypes
(`bundle.steps.fast` is the reference): NaN handling, unknown and infrequent categories,
``drop``, bin edges, polynomial column order. Scores match ``Bundle.predict`` within
float32 rounding; labels are identical.

Inside a graph nothing can be "refused before TensorFlow sees the data", so the input
contract's checks and the steps' own refusals become ``Assert`` ops; a failed
check makes the call fail with ``tf.errors.InvalidArgumentError`` (HTTP 400 in TF Serving)
whose message names the column (quotes become backticks: TensorFlow escapes quotes), e.g.
``assertion failed: [Column `plan` has values training never saw; it accepts only its 3
known values:] [platinum]``.
Checked: row counts agree across columns; missing values only where training had them or
a step imputes them; integers within the training dtype; closed categories; infinity /
NaN where a step refuses them; unknown categories under ``handle_unknown='error'``.

Export refuses (`UnsupportedFormatError`, nothing written) a bundle with any step, option
or input that has no TensorFlow form; the message lists every such part by its path.

Example:
    >>> bundle = Bundle.load("models/churn")
    >>> export_saved_model(bundle, "serving/churn/1")
    PosixPath('serving/churn/1')
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, ExportError, UnsupportedFormatError, bullet_list
from ..steps import class_path, postprocess_mode

__all__ = [
    "DEFAULT_MISSING_TOKEN",
    "EXPORT_FORMAT",
    "INFO_FILE",
    "SIGNATURE_KEY",
    "export_saved_model",
    "signature_name",
    "supported_classes",
]

SIGNATURE_KEY = "serving_default"
DEFAULT_MISSING_TOKEN = ""
ARRAY_INPUT = "input"
INFO_FILE = "assets.extra/keras_bundle.json"
EXPORT_FORMAT = "keras-bundle.saved_model"
EXPORT_FORMAT_VERSION = 1
"""Version of `INFO_FILE`'s layout; bump it when a reader of the previous one would misread."""
SAMPLE = 5  # offending values shown in a failed check's message
TEXT = np.dtype(object)


class _NoForm(Exception):
    """A part of the pipeline has no TensorFlow form (raised while tracing)."""


def _tf() -> Any:
    from ..model import import_keras

    import_keras()  # pyarrow before TensorFlow: see bundle.model.import_keras
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------------------------------
# Signature inputs
# ---------------------------------------------------------------------------------------


def signature_name(column: Any) -> str:
    """The signature input name of a column: TensorFlow keeps only ``[A-Za-z0-9_]``.

    >>> signature_name("monthly spend"), signature_name("2nd"), signature_name("age")
    ('monthly_spend', 'arg_2nd', 'age')
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(column))
    return name if re.match(r"[A-Za-z]", name) else f"arg_{name}"


@dataclass(frozen=True)
class _Input:
    """One signature input: what the client sends and what the steps see."""

    column: Any  # the contract's column name (ARRAY_INPUT for an array bundle)
    key: str  # signature input name
    wire: Any  # dtype of the signature tensor (numpy dtype; object = tf.string)
    dtype: np.dtype  # dtype the steps see: the training dtype (object for text)
    shape: tuple[int | None, ...] = ()  # per-sample shape
    allows_missing: bool = True
    sentinel: str = "nan"  # text: what a missing value was at training ("nan" or "none")
    known: tuple[Any, ...] | None = None  # the only values accepted (closed categories)
    seen: tuple[Any, ...] = ()  # text values seen in training (for the token check)

    @property
    def is_text(self) -> bool:
        return self.dtype == TEXT


def _numpy_dtype(text: str | None) -> np.dtype | None:
    try:
        return np.dtype(text) if text else None
    except TypeError:
        return None


def _column_input(column: dict[str, Any], problems: list[str]) -> _Input | None:
    name, kind = column["name"], column["kind"]
    allows = column.get("has_missing") is not False or bool(column.get("missing_handled"))
    known = column.get("closed_categories")
    common = {
        "column": name,
        "key": signature_name(name),
        "allows_missing": allows,
        "known": tuple(known) if known is not None else None,
    }
    dtype = _numpy_dtype(column.get("dtype"))
    if kind == "float" and dtype is not None and dtype.kind == "f":
        return _Input(wire=dtype, dtype=dtype, **common)
    if kind == "integer" and dtype is not None and dtype.kind in "iu":
        return _Input(wire=np.dtype(np.int64), dtype=dtype, **common)
    if kind == "bool":
        return _Input(wire=np.dtype(bool), dtype=np.dtype(bool), **common)
    if kind in ("string", "categorical"):
        values = column.get("dtype_categories") if kind == "categorical" else None
        if values is not None and not all(isinstance(v, str) for v in values):
            problems.append(
                f"input column {name!r}: a categorical dtype with non-text categories has "
                "no TensorFlow input form (cast the column to str or a number)"
            )
            return None
        if values is not None and known is None:
            common["known"] = tuple(values)
        sentinel = column.get("missing_value") or "nan"
        seen = tuple(v for v in column.get("categories") or () if isinstance(v, str))
        return _Input(wire=TEXT, dtype=TEXT, sentinel=sentinel, seen=seen, **common)
    problems.append(
        f"input column {name!r}: kind {kind!r} (dtype {column.get('dtype')}) has no "
        "TensorFlow input form; export supports float, integer, bool, string and "
        "categorical columns"
    )
    return None


def _inputs(schema: Any, problems: list[str]) -> list[_Input]:
    if schema is None:
        problems.append(
            "the bundle has no input contract, so the signature's inputs are unknown "
            "(save it with input_example=)"
        )
        return []
    data = schema.to_dict()
    if data["kind"] == "tabular":
        inputs = [_column_input(column, problems) for column in data["columns"]]
        inputs = [spec for spec in inputs if spec is not None]
        _check_keys(inputs, problems)
        return inputs
    if data["kind"] == "array":
        dtype = _numpy_dtype(data.get("dtype"))
        if dtype is None or dtype.kind not in "biuf":
            problems.append(
                f"array input of dtype {data.get('dtype')}: only numeric and bool arrays "
                "have a TensorFlow input form"
            )
            return []
        allows = data.get("has_missing") is not False or bool(data.get("missing_handled"))
        shape = tuple(data["shape"])
        return [_Input(ARRAY_INPUT, ARRAY_INPUT, dtype, dtype, shape, allows_missing=allows)]
    problems.append(
        f"the input contract is of kind {data['kind']!r}; export supports tabular and "
        "single-array bundles (multi-input models are not supported yet)"
    )
    return []


def _check_keys(inputs: Sequence[_Input], problems: list[str]) -> None:
    """TensorFlow op names are unique ignoring case: two columns may not share a key."""
    by_key: dict[str, list[Any]] = {}
    for spec in inputs:
        by_key.setdefault(spec.key.lower(), []).append(spec.column)
    for columns in by_key.values():
        if len(columns) > 1:
            shown = ", ".join(repr(c) for c in columns)
            problems.append(
                f"input columns {shown} would share the signature input name "
                f"{signature_name(columns[0])!r} (TensorFlow keeps [A-Za-z0-9_] and ignores "
                "case); rename one of them before training"
            )


# ---------------------------------------------------------------------------------------
# Values flowing through the graph: columns (numeric tensors or text) or one 2-D tensor
# ---------------------------------------------------------------------------------------


@dataclass
class _Text:
    """A text column: its strings, where it is missing, and which missing value it holds.

    `sentinel` is the Python value scikit-learn would see in the missing rows: "nan" (a
    float NaN) or "none" (None).
    """

    values: Any
    missing: Any
    sentinel: str = "nan"

    dtype = TEXT


def _np(value: Any) -> np.dtype:
    """The numpy dtype of a tensor, a _Text column, a tf.DType or a numpy dtype."""
    if isinstance(value, _Text):
        return TEXT
    if isinstance(value, np.dtype):
        return value
    dtype = getattr(value, "dtype", value)
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


class _Frame:
    """A step's input or output: a list of columns, or one 2-D tensor (`fast._Frame`)."""

    def __init__(self, n_rows: Any, *, columns: list[Any] | None = None, array: Any = None):
        self.n_rows = n_rows
        self._columns = columns
        self._array = array

    @classmethod
    def of(cls, array: Any) -> _Frame:
        return cls(_tf().shape(array)[0], array=array)

    @property
    def width(self) -> int:
        if self._columns is not None:
            return len(self._columns)
        return int(self._array.shape[1])

    @property
    def dtype(self) -> np.dtype:
        if self._columns is None:
            return _np(self._array)
        if not self._columns:
            return np.dtype(np.float64)
        return np.result_type(*(_np(c) for c in self._columns))

    @property
    def has_text(self) -> bool:
        return self._columns is not None and any(isinstance(c, _Text) for c in self._columns)

    def column(self, j: int) -> Any:
        return self._array[:, j] if self._columns is None else self._columns[j]

    def columns(self) -> list[Any]:
        if self._columns is not None:
            return list(self._columns)
        return [self._array[:, j] for j in range(self.width)]

    def take(self, indices: Sequence[int]) -> _Frame:
        if self._columns is not None:
            return _Frame(self.n_rows, columns=[self._columns[j] for j in indices])
        indices = list(indices)
        if indices and indices == list(range(indices[0], indices[0] + len(indices))):
            start, stop = indices[0], indices[0] + len(indices)
            return _Frame(self.n_rows, array=self._array[:, start:stop])  # a contiguous run
        return _Frame(self.n_rows, array=_tf().gather(self._array, indices, axis=1))

    def full(self, who: str = "a step") -> Any:
        """The frame as one 2-D tensor of numpy's common dtype (like ``np.column_stack``)."""
        tf = _tf()
        if self._columns is None:
            return self._array
        if self.has_text:
            raise _NoForm(f"{who}: text columns where numbers are needed")
        dtype = self.dtype
        if not self._columns:
            return tf.zeros(tf.stack([self.n_rows, 0]), dtype=dtype)
        return tf.stack([tf.cast(c, dtype) for c in self._columns], axis=1)

    def to(self, dtype: Any, who: str = "a step") -> Any:
        return _tf().cast(self.full(who), np.dtype(dtype))


def _floats(frame: _Frame, who: str) -> Any:
    """check_array's conversion: float32/float64 stay, anything else becomes float64."""
    x = frame.full(who)
    return x if _np(x) in (np.float32, np.float64) else _tf().cast(x, np.float64)


def _numbers(frame: _Frame, who: str) -> Any:
    """check_array(dtype=None): ints and floats stay, anything else becomes float64."""
    x = frame.full(who)
    return x if _np(x).kind in "iuf" else _tf().cast(x, np.float64)


def _inplace(op: Callable[[Any, Any], Any], x: Any, param: np.ndarray) -> Any:
    """``x op= param`` as NumPy runs it: computed in the common dtype, kept in x's."""
    tf = _tf()
    wide = np.result_type(_np(x), np.asarray(param).dtype)
    result = op(tf.cast(x, wide), tf.constant(np.asarray(param, dtype=wide)))
    return tf.cast(result, _np(x))


def _scalar(value: Any, like: Any) -> Any:
    """`value` as a constant of `like`'s dtype (``tf.cast`` of a Python float rounds it
    through float32 first)."""
    return _tf().constant(value, dtype=like.dtype)


def _stack(blocks: list[Any], n_rows: Any, dtype: Any) -> Any:
    tf = _tf()
    if not blocks:
        return tf.zeros(tf.stack([n_rows, 0]), dtype=np.dtype(dtype))
    return blocks[0] if len(blocks) == 1 else tf.concat(blocks, axis=1)


# ---------------------------------------------------------------------------------------
# Checks: Assert ops, all run before the outputs are returned
# ---------------------------------------------------------------------------------------


def _token_label(token: str) -> str:
    return "the empty string" if token == "" else f"the token {token!r}"


def _unquoted(text: str) -> str:
    """A check's message with backticks for quotes: TensorFlow prints ' as \\'."""
    return text.replace("'", "`")


@dataclass
class _Build:
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
        tf = _tf()
        shown = [_unquoted(message), *(_unquoted(d) if isinstance(d, str) else d for d in data)]
        # The raw op: tf.debugging.Assert wraps each check in a cond, which costs more per
        # call than computing the few values the message shows.
        self.checks.append(tf.raw_ops.Assert(condition=ok, data=shown, summarize=SAMPLE))

    def note_text(self, values: Sequence[Any], where: str) -> None:
        for value in values:
            if isinstance(value, str):
                self.text_constants.setdefault(value, where)


@dataclass(frozen=True)
class _Ctx:
    """What a node knows about its input when it is built (`fast._Context`)."""

    build: _Build
    path: str
    n_in: int
    names: tuple[str, ...] | None

    def name(self, j: int) -> str:
        return repr(self.names[j]) if self.names else f"{j}"

    def refuse(self, bad: Any, why: str) -> None:
        """Fail the call where the 2-D mask `bad` is set, naming the first such column."""
        tf = _tf()
        names = [_unquoted(self.name(j)) for j in range(self.n_in)] or ["?"]
        first = tf.argmax(tf.cast(tf.reduce_any(bad, axis=0), tf.int32), output_type=tf.int32)
        self.build.check(
            tf.logical_not(tf.reduce_any(bad)),
            f"{self.path}: input column",
            tf.gather(tf.constant(names), tf.minimum(first, len(names) - 1)),
            f"contains {why}",
        )


@dataclass
class _Node:
    run: Callable[[_Frame], _Frame]
    n_out: int


INFINITY = "infinity, which the step refuses (like scikit-learn; NaN is allowed)"
NOT_FINITE = "NaN or infinity, which the step refuses (like scikit-learn)"


def _refuse_infinite(x: Any, ctx: _Ctx) -> None:
    if _np(x).kind == "f":
        ctx.refuse(_tf().math.is_inf(x), INFINITY)


def _refuse_not_finite(x: Any, ctx: _Ctx) -> None:
    tf = _tf()
    if _np(x).kind == "f":
        ctx.refuse(tf.logical_not(tf.math.is_finite(x)), NOT_FINITE)


# ---------------------------------------------------------------------------------------
# Preprocess forms, one per native codec (the dispatch table is `_forms()`)
# ---------------------------------------------------------------------------------------


def _elementwise(run: Callable[[Any], Any], ctx: _Ctx) -> _Node:
    """A scaler: NaN passes through, infinity is refused (scikit-learn's allow-nan)."""

    def scaled(frame: _Frame) -> _Frame:
        x = _floats(frame, ctx.path)
        _refuse_infinite(x, ctx)
        return _Frame.of(run(x))

    return _Node(scaled, ctx.n_in)


def _standard_scaler(obj: Any, ctx: _Ctx) -> _Node:
    mean = obj.mean_ if obj.with_mean else None
    scale = obj.scale_ if obj.with_std else None

    def run(x: Any) -> Any:
        tf = _tf()
        if mean is not None:
            x = x - tf.constant(mean.astype(_np(x)))
        return x if scale is None else x / tf.constant(scale.astype(_np(x)))

    return _elementwise(run, ctx)


def _clip(x: Any, low: float, high: float) -> Any:
    tf = _tf()
    dtype = _np(x)
    return tf.clip_by_value(x, dtype.type(low), dtype.type(high))  # NaN stays NaN


def _min_max_scaler(obj: Any, ctx: _Ctx) -> _Node:
    low, high = obj.feature_range

    def run(x: Any) -> Any:
        x = _inplace(lambda a, b: a + b, _inplace(lambda a, b: a * b, x, obj.scale_), obj.min_)
        return _clip(x, low, high) if obj.clip else x

    return _elementwise(run, ctx)


def _max_abs_scaler(obj: Any, ctx: _Ctx) -> _Node:
    def run(x: Any) -> Any:
        x = _inplace(lambda a, b: a / b, x, obj.scale_)
        return _clip(x, -1, 1) if getattr(obj, "clip", False) else x

    return _elementwise(run, ctx)


def _robust_scaler(obj: Any, ctx: _Ctx) -> _Node:
    center = obj.center_ if obj.with_centering else None
    scale = obj.scale_ if obj.with_scaling else None

    def run(x: Any) -> Any:
        if center is not None:
            x = _inplace(lambda a, b: a - b, x, center)
        return x if scale is None else _inplace(lambda a, b: a / b, x, scale)

    return _elementwise(run, ctx)


# -- SimpleImputer, MissingIndicator ------------------------------------------------------


def _is_nan(value: Any) -> bool:
    return isinstance(value, (float, np.floating)) and value != value


def _numeric_mask(x: Any, missing: Any) -> Any:
    """scikit-learn's `_get_mask` on a numeric tensor (2-D or 1-D)."""
    tf = _tf()
    dtype = _np(x)
    if _is_nan(missing):
        return tf.math.is_nan(x) if dtype.kind == "f" else tf.zeros_like(x, dtype=tf.bool)
    if missing is None or isinstance(missing, str):
        return tf.zeros_like(x, dtype=tf.bool)  # a number never equals None or a string
    common = np.result_type(dtype, missing)  # NumPy's rules for a Python scalar
    return tf.equal(tf.cast(x, common), tf.constant(missing, dtype=common))


def _text_mask(column: _Text, missing: Any) -> Any:
    """`_get_mask` on a text column: NaN matches NaN, None matches None, a string itself."""
    tf = _tf()
    if _is_nan(missing):
        return column.missing if column.sentinel == "nan" else tf.zeros_like(column.missing)
    if missing is None:
        return column.missing if column.sentinel == "none" else tf.zeros_like(column.missing)
    if isinstance(missing, str):
        return tf.logical_and(tf.logical_not(column.missing), tf.equal(column.values, missing))
    return tf.zeros_like(column.missing)


def _refuse_nan_text(column: _Text, ctx: _Ctx, j: int, why: str) -> None:
    """An object column holding NaN where the step refuses NaN (`x != x`)."""
    tf = _tf()
    if column.sentinel == "nan":
        ctx.build.check(
            tf.logical_not(tf.reduce_any(column.missing)),
            f"{ctx.path}: input column {ctx.name(j)} has missing values (NaN), {why}",
        )


def _simple_imputer(obj: Any, ctx: _Ctx) -> _Node:
    from ..steps.fast import imputer_statistics

    missing = obj.missing_values
    if not (missing is None or isinstance(missing, (numbers.Number, str))):
        ctx.build.problem(ctx.path, f"missing_values={missing!r} has no TensorFlow form")
        return _Node(lambda frame: frame, 0)
    keep, fill = imputer_statistics(obj, ctx.n_in)
    flagged = obj.indicator_.features_ if obj.add_indicator else None
    n_out = keep.size + (0 if flagged is None else flagged.size)
    nan_missing = _is_nan(missing)
    if obj._fit_dtype.kind == "O":
        return _object_imputer(obj, ctx, keep, fill, flagged, n_out)
    read = _floats if obj.strategy in ("mean", "median") else _numbers

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        x = read(frame, ctx.path)
        if nan_missing:
            _refuse_infinite(x, ctx)
        else:
            _refuse_not_finite(x, ctx)
        mask = _numeric_mask(x, missing)
        kept = x if keep.size == ctx.n_in else tf.gather(x, keep, axis=1)
        kept_mask = mask if keep.size == ctx.n_in else tf.gather(mask, keep, axis=1)
        values = tf.constant(np.asarray(fill).astype(_np(x)))
        out = tf.where(kept_mask, values[None, :], kept)
        if flagged is not None:
            out = tf.concat([out, tf.cast(tf.gather(mask, flagged, axis=1), _np(out))], axis=1)
        return _Frame.of(out)

    return _Node(run, n_out)


def _object_imputer(obj: Any, ctx: _Ctx, keep, fill, flagged, n_out: int) -> _Node:
    """An imputer fitted on object data, column by column (`fast._object_imputer`)."""
    missing = obj.missing_values
    checked = not _is_nan(missing)  # another missing value: NaN itself is refused
    fills = list(np.asarray(fill, dtype=object))
    if isinstance(missing, str):
        ctx.build.note_text([missing], ctx.path)

    def impute(column: Any, value: Any, j: int) -> Any:
        tf = _tf()
        if isinstance(column, _Text):
            if not isinstance(value, str):
                raise _NoForm(
                    f"{ctx.path} fills text column {ctx.name(j)} with {value!r}; only a text "
                    "fill value has a TensorFlow form"
                )
            mask = _text_mask(column, missing)
            return _Text(
                tf.where(mask, tf.constant(value), column.values),
                tf.logical_and(column.missing, tf.logical_not(mask)),
                column.sentinel,
            )
        x = tf.cast(column, np.float64)  # an object column of numbers reads as float64
        if not isinstance(value, (numbers.Real, np.number)) or isinstance(value, str):
            raise _NoForm(
                f"{ctx.path} fills numeric column {ctx.name(j)} with {value!r}; only a "
                "number has a TensorFlow form there"
            )
        return tf.where(_numeric_mask(x, missing), tf.constant(float(value), tf.float64), x)

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        columns = frame.columns()
        if checked:
            for j, column in enumerate(columns):
                if isinstance(column, _Text):
                    _refuse_nan_text(column, ctx, j, "which this imputer refuses")
                elif _np(column).kind == "f":
                    ok = tf.logical_not(tf.reduce_any(tf.math.is_nan(column)))
                    ctx.build.check(
                        ok, f"{ctx.path}: input column {ctx.name(j)} contains {NOT_FINITE}"
                    )
        out = [impute(columns[j], value, int(j)) for j, value in zip(keep, fills, strict=True)]
        for j in flagged if flagged is not None else ():
            column = columns[j]
            if isinstance(column, _Text):
                out.append(_text_mask(column, missing))
            else:
                out.append(_numeric_mask(tf.cast(column, np.float64), missing))
        return _Frame(frame.n_rows, columns=out)

    return _Node(run, n_out)


def _missing_indicator(obj: Any, ctx: _Ctx) -> _Node:
    missing = obj.missing_values
    if getattr(obj, "_precomputed", False):
        ctx.build.problem(ctx.path, "a MissingIndicator fitted on a precomputed mask")
        return _Node(lambda frame: frame, 0)
    features = np.asarray(obj.features_)
    subset = obj.features == "missing-only" and features.size < obj._n_features
    new_refused = obj.features == "missing-only" and obj.error_on_new
    n_out = int(features.size) if obj.features == "missing-only" else ctx.n_in

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        masks = []
        for j, column in enumerate(frame.columns()):
            if isinstance(column, _Text):
                if not _is_nan(missing):
                    _refuse_nan_text(column, ctx, j, "which this step refuses")
                masks.append(_text_mask(column, missing))
            else:
                x = column if _np(column).kind in "iuf" else tf.cast(column, np.float64)
                if _np(x).kind == "f":
                    bad = tf.math.is_inf(x) if _is_nan(missing) else ~tf.math.is_finite(x)
                    ctx.build.check(
                        tf.logical_not(tf.reduce_any(bad)),
                        f"{ctx.path}: input column {ctx.name(j)} contains "
                        + (INFINITY if _is_nan(missing) else NOT_FINITE),
                    )
                masks.append(_numeric_mask(x, missing))
        mask = tf.stack(masks, axis=1) if masks else tf.zeros(tf.stack([frame.n_rows, 0]), bool)
        if new_refused:
            unfitted = [j for j in range(ctx.n_in) if j not in set(features.tolist())]
            if unfitted:
                new = tf.reduce_any(tf.gather(mask, unfitted, axis=1), axis=0)
                ctx.build.check(
                    tf.logical_not(tf.reduce_any(new)),
                    f"{ctx.path}: columns that had no missing values in fit have some now "
                    "(MissingIndicator(error_on_new=True)); column positions:",
                    tf.boolean_mask(tf.constant(unfitted), new),
                )
        if subset:
            mask = tf.gather(mask, features, axis=1)
        return _Frame.of(mask)

    return _Node(run, n_out)


# -- Categories ---------------------------------------------------------------------------


class _Lookup:
    """Category -> index for one encoder feature, -1 for unseen (`fast._Lookup`).

    Text goes through a `tf.lookup.StaticHashTable` (built now, tracked by the module);
    numbers through a sorted search. NaN and None match only a NaN or None category.
    """

    def __init__(self, categories: Sequence[Any], ctx: _Ctx, label: str):
        tf = _tf()
        items = list(categories)
        self.nan_code = next((k for k, c in enumerate(items) if _is_nan(c)), -1)
        self.none_code = next((k for k, c in enumerate(items) if c is None), -1)
        text = [(k, c) for k, c in enumerate(items) if isinstance(c, str)]
        nums = [
            (k, c)
            for k, c in enumerate(items)
            if isinstance(c, (numbers.Number, np.number, np.bool_))
            and not isinstance(c, str)
            and not _is_nan(c)
        ]
        if text and nums:
            ctx.build.problem(ctx.path, f"{label} mixes text and number categories")
        self.table = None
        if text:
            ctx.build.note_text([c for _, c in text], ctx.path)
            keys = tf.constant([c for _, c in text], dtype=tf.string)
            codes = tf.constant([k for k, _ in text], dtype=tf.int64)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, codes), default_value=-1
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
        tf = _tf()
        if isinstance(column, _Text):
            if self.table is not None:
                codes = self.table.lookup(column.values)
            else:
                codes = tf.fill(tf.shape(column.values, out_type=tf.int64), np.int64(-1))
            code = self.nan_code if column.sentinel == "nan" else self.none_code
            return tf.where(column.missing, tf.constant(code, tf.int64), codes)
        n = tf.shape(column, out_type=tf.int64)
        codes = tf.fill(n, tf.constant(-1, tf.int64))
        if self.known is not None:
            common = np.result_type(self.known.dtype, _np(column))
            if common.kind == "b":
                common = np.dtype(np.int64)
            values = tf.cast(column, common)
            known = tf.constant(self.known.astype(common))
            at = tf.minimum(
                tf.searchsorted(known, values, side="left", out_type=tf.int64),
                len(self.known) - 1,
            )
            found = tf.equal(tf.gather(known, at), values)
            codes = tf.where(found, tf.gather(tf.constant(self.order), at), codes)
        if self.nan_code >= 0 and _np(column).kind == "f":
            codes = tf.where(tf.math.is_nan(column), tf.constant(self.nan_code, tf.int64), codes)
        return codes


def _describe_unknown(column: Any, bad: Any) -> Any:
    tf = _tf()
    values = column.values if isinstance(column, _Text) else column
    return tf.boolean_mask(values, bad)[:SAMPLE]


def _encoder_codes(obj: Any, lookups: list[_Lookup], frame: _Frame, ctx: _Ctx) -> list[Any]:
    """Category codes per feature; unseen values fail the call under handle_unknown='error'."""
    tf = _tf()
    codes = []
    for j, lookup in enumerate(lookups):
        column = frame.column(j)
        if not isinstance(column, _Text) and _np(column).kind == "f":
            bad = tf.math.is_inf(column)
            ctx.build.check(
                tf.logical_not(tf.reduce_any(bad)),
                f"{ctx.path}: input column {ctx.name(j)} contains {INFINITY}",
            )
        code = lookup(column)
        if obj.handle_unknown == "error":
            bad = code < 0
            ctx.build.check(
                tf.logical_not(tf.reduce_any(bad)),
                f"Column {ctx.name(j)} has values {type(obj).__name__}(handle_unknown='error') "
                f"never saw ({ctx.path}; a missing value shows as the missing token):",
                _describe_unknown(column, bad),
            )
        codes.append(code)
    return codes


def _gather_unseen_last(table: np.ndarray, codes: Any) -> Any:
    """``table[codes]`` where code -1 (unseen) takes the table's last entry."""
    tf = _tf()
    n = len(table) - 1
    return tf.gather(tf.constant(table), tf.where(codes < 0, tf.constant(n, tf.int64), codes))


def _one_hot_encoder(obj: Any, ctx: _Ctx) -> _Node:
    from ..steps.fast import one_hot_columns

    lookups = [_Lookup(c, ctx, f"feature {ctx.name(j)}") for j, c in enumerate(obj.categories_)]
    widths = [int(n) for n in obj._n_features_outs]
    tables = [one_hot_columns(obj, j, 0).astype(np.int64) for j in range(len(lookups))]
    dtype = np.dtype(obj.dtype)

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        blocks = [
            tf.one_hot(_gather_unseen_last(table, codes), width, dtype=dtype)  # -1: all zeros
            for table, codes, width in zip(
                tables, _encoder_codes(obj, lookups, frame, ctx), widths, strict=True
            )
        ]
        return _Frame.of(_stack(blocks, frame.n_rows, dtype))

    return _Node(run, sum(widths))


def _ordinal_encoder(obj: Any, ctx: _Ctx) -> _Node:
    from ..steps.fast import ordinal_values

    lookups = [_Lookup(c, ctx, f"feature {ctx.name(j)}") for j, c in enumerate(obj.categories_)]
    tables = [ordinal_values(obj, j) for j in range(len(lookups))]
    dtype = np.dtype(obj.dtype)

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        codes = _encoder_codes(obj, lookups, frame, ctx)
        if not codes:
            return _Frame.of(tf.zeros(tf.stack([frame.n_rows, 0]), dtype))
        columns = [_gather_unseen_last(t, c) for t, c in zip(tables, codes, strict=True)]
        return _Frame.of(tf.stack(columns, axis=1))

    return _Node(run, len(tables))


# -- Numeric expansions -------------------------------------------------------------------


def _kbins_discretizer(obj: Any, ctx: _Ctx) -> _Node:
    inner = [np.asarray(edges[1:-1]) for edges in obj.bin_edges_]
    widths = [int(n) for n in obj.n_bins_]
    one_hot = obj.encode != "ordinal"

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        x = _floats(frame, ctx.path) if obj.dtype is None else frame.to(obj.dtype, ctx.path)
        _refuse_not_finite(x, ctx)
        bins = []
        for j, edges in enumerate(inner):
            common = np.result_type(edges.dtype, _np(x))
            values = tf.cast(x[:, j], common)
            edges_tensor = tf.constant(edges.astype(common))
            bins.append(tf.searchsorted(edges_tensor, values, side="right", out_type=tf.int64))
        if one_hot:
            blocks = [tf.one_hot(b, w, dtype=_np(x)) for b, w in zip(bins, widths, strict=True)]
            return _Frame.of(_stack(blocks, frame.n_rows, _np(x)))
        if not bins:
            return _Frame.of(tf.zeros(tf.stack([frame.n_rows, 0]), _np(x)))
        return _Frame.of(tf.cast(tf.stack(bins, axis=1), _np(x)))

    return _Node(run, sum(widths) if one_hot else ctx.n_in)


def _polynomial_features(obj: Any, ctx: _Ctx) -> _Node:
    from ..steps.fast import polynomial_plan

    n_features, bias = ctx.n_in, int(obj.include_bias)
    plan = polynomial_plan(obj, n_features)
    n_full, n_out = obj._n_out_full, obj.n_output_features_

    def expand(x: Any, n_rows: Any) -> Any:
        tf = _tf()
        blocks = [tf.ones(tf.stack([n_rows, bias]), dtype=_np(x))]
        if obj._max_degree == 0:
            return blocks[0]
        blocks.append(x)
        width, xp = bias + n_features, None
        for start, end, feature, out_start, out_end in plan:
            assert out_start == width, "polynomial plan out of order"
            if xp is None or end > int(xp.shape[1]):
                xp = tf.concat(blocks, axis=1)  # every column a degree reads exists by now
            blocks.append(xp[:, start:end] * x[:, feature : feature + 1])
            width = out_end
        xp = tf.concat(blocks, axis=1)
        if obj._min_degree <= 1:
            return xp
        return tf.concat([xp[:, :bias], xp[:, n_full - n_out + bias :]], axis=1)

    def run(frame: _Frame) -> _Frame:
        x = _floats(frame, ctx.path)
        _refuse_not_finite(x, ctx)
        return _Frame.of(expand(x, frame.n_rows))

    return _Node(run, n_out)


# -- FunctionTransformer: NumPy ufuncs mapped to TensorFlow ops ---------------------------


FLOAT, KEEP, SAME, NO_INT = "float", "keep", "same", "no-int"
"""What NumPy does with integer input: computes in float64, keeps the integer dtype,
returns the input unchanged (floor/ceil/trunc), or integer arithmetic that is not mapped."""


@functools.cache
def _ufunc_table() -> dict[Any, tuple[Callable[[Any], Any], str]]:
    """ufunc -> (TensorFlow function, what NumPy does with integer input)."""
    tf = _tf()
    ln2, ln10 = math.log(2.0), math.log(10.0)

    def trunc(x: Any) -> Any:
        return tf.where(x < 0, tf.math.ceil(x), tf.math.floor(x))

    def cbrt(x: Any) -> Any:
        return tf.math.sign(x) * tf.math.pow(tf.math.abs(x), _scalar(1 / 3, x))

    def scaled(k: float) -> Callable[[Any], Any]:
        return lambda x: x * _scalar(k, x)

    table: dict[Any, tuple[Callable[[Any], Any], str]] = {
        np.log1p: (tf.math.log1p, FLOAT),
        np.expm1: (tf.math.expm1, FLOAT),
        np.log: (tf.math.log, FLOAT),
        np.log2: (lambda x: tf.math.log(x) / _scalar(ln2, x), FLOAT),
        np.log10: (lambda x: tf.math.log(x) / _scalar(ln10, x), FLOAT),
        np.exp: (tf.math.exp, FLOAT),
        np.exp2: (lambda x: tf.math.pow(_scalar(2, x), x), FLOAT),
        np.sqrt: (tf.math.sqrt, FLOAT),
        np.cbrt: (cbrt, FLOAT),
        np.absolute: (tf.math.abs, KEEP),
        np.fabs: (tf.math.abs, FLOAT),
        np.square: (tf.math.square, KEEP),
        np.sign: (tf.math.sign, KEEP),
        np.negative: (tf.math.negative, KEEP),
        np.positive: (tf.identity, KEEP),
        np.reciprocal: (tf.math.reciprocal, NO_INT),
        np.tanh: (tf.math.tanh, FLOAT),
        np.sinh: (tf.math.sinh, FLOAT),
        np.cosh: (tf.math.cosh, FLOAT),
        np.sin: (tf.math.sin, FLOAT),
        np.cos: (tf.math.cos, FLOAT),
        np.tan: (tf.math.tan, FLOAT),
        np.arcsin: (tf.math.asin, FLOAT),
        np.arccos: (tf.math.acos, FLOAT),
        np.arctan: (tf.math.atan, FLOAT),
        np.arcsinh: (tf.math.asinh, FLOAT),
        np.arccosh: (tf.math.acosh, FLOAT),
        np.arctanh: (tf.math.atanh, FLOAT),
        np.floor: (tf.math.floor, SAME),
        np.ceil: (tf.math.ceil, SAME),
        np.rint: (tf.math.rint, FLOAT),
        np.trunc: (trunc, SAME),
        np.deg2rad: (scaled(math.pi / 180), FLOAT),
        np.radians: (scaled(math.pi / 180), FLOAT),
        np.rad2deg: (scaled(180 / math.pi), FLOAT),
        np.degrees: (scaled(180 / math.pi), FLOAT),
    }
    try:
        import scipy.special

        table[scipy.special.expit] = (tf.math.sigmoid, FLOAT)
    except ImportError:  # scipy comes with scikit-learn; nothing to map without it
        pass
    return table


def supported_ufuncs() -> list[str]:
    """Names of the ufuncs a FunctionTransformer may use in an exported graph."""
    return sorted({getattr(f, "__name__", str(f)) for f in _ufunc_table()})


def _apply_ufunc(func: Any, x: Any, where: str) -> Any:
    tf = _tf()
    op, integers = _ufunc_table()[func]
    dtype = _np(x)
    if dtype.kind == "b":
        raise _NoForm(f"{where} applies {func.__name__} to booleans (NumPy gives float16)")
    if dtype.kind in "iu":
        if integers == SAME:
            return x
        if integers == NO_INT:
            raise _NoForm(f"{where} applies {func.__name__} to integers (integer arithmetic)")
        if integers == FLOAT:
            x = tf.cast(x, np.float64)  # NumPy's float64 loop for integer input
    return op(x)


def _function_problem(func: Any, kw_args: Any, label: str) -> str | None:
    if func is None:
        return None
    if kw_args:
        return f"{label} with keyword arguments {sorted(kw_args)} has no TensorFlow form"
    if func not in _ufunc_table():
        name = getattr(func, "__name__", type(func).__name__)
        return f"{label}={name} has no TensorFlow form; mapped ufuncs: " + ", ".join(
            supported_ufuncs()
        )
    return None


def _function_transformer(obj: Any, ctx: _Ctx) -> _Node:
    func = obj.func
    problem = _function_problem(func, obj.kw_args, "func")
    if problem:
        ctx.build.problem(ctx.path, problem)
        return _Node(lambda frame: frame, ctx.n_in)
    if func is None:
        return _Node(lambda frame: frame, ctx.n_in)

    def run(frame: _Frame) -> _Frame:
        x = frame.full(ctx.path)
        if obj.validate:
            _refuse_not_finite(x, ctx)
        return _Frame.of(_apply_ufunc(func, x, ctx.path))

    return _Node(run, ctx.n_in)


# -- Containers ---------------------------------------------------------------------------


def _names_after(obj: Any, names: Any) -> tuple[str, ...] | None:
    try:
        return tuple(str(n) for n in obj.get_feature_names_out(list(names) if names else None))
    except Exception:  # any step without names: messages then use positions
        return None


def _is_keyword(trans: Any, word: str) -> bool:
    return isinstance(trans, str) and trans == word


def _pipeline(obj: Any, ctx: _Ctx) -> _Node:
    runs, n_in, names = [], ctx.n_in, ctx.names
    for name, step in obj.steps:
        if step is None or _is_keyword(step, "passthrough"):
            continue
        path = f"{ctx.path} > steps[{name!r}] {type(step).__name__}"
        node = _compile(step, _Ctx(ctx.build, path, n_in, names))
        runs.append(node.run)
        after = _names_after(step, names)
        # Messages name columns: a step that keeps the width keeps the columns' names.
        names = after if after is not None or node.n_out != n_in else names
        n_in = node.n_out

    def run(frame: _Frame) -> _Frame:
        for step in runs:
            frame = step(frame)
        return frame

    return _Node(run, n_in)


def _block(trans: Any, ctx: _Ctx, indices: list[int], label: str) -> _Node:
    if _is_keyword(trans, "passthrough"):
        return _Node(lambda frame: frame, len(indices))
    names = tuple(ctx.names[i] for i in indices) if ctx.names else None
    path = f"{ctx.path} > {label} {type(trans).__name__}"
    return _compile(trans, _Ctx(ctx.build, path, len(indices), names))


def _weighted(node: _Node, weight: float | None, ctx: _Ctx) -> Callable[[_Frame], _Frame]:
    if weight is None:
        return node.run

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        x = node.run(frame).full(ctx.path)
        dtype = np.result_type(_np(x), weight)
        return _Frame.of(tf.cast(x, dtype) * tf.constant(weight, dtype=dtype))

    return run


def _stacked(blocks: list[tuple[list[int] | None, Callable[[_Frame], _Frame], int]]) -> _Node:
    """Run each block on its columns and join the results like ``np.hstack``."""
    width = sum(n for *_, n in blocks)

    def run(frame: _Frame) -> _Frame:
        tf = _tf()
        parts = [block(frame if cols is None else frame.take(cols)) for cols, block, _ in blocks]
        if len(parts) == 1:
            return parts[0]
        if any(part.has_text for part in parts):  # keep text as columns: no common dtype
            return _Frame(frame.n_rows, columns=[c for part in parts for c in part.columns()])
        dtype = np.result_type(*(part.dtype for part in parts)) if parts else np.float64
        arrays = [tf.cast(part.full(), dtype) for part in parts]
        return _Frame.of(_stack(arrays, frame.n_rows, dtype))

    return _Node(run, width)


def _column_transformer(obj: Any, ctx: _Ctx) -> _Node:
    weights = obj.transformer_weights or {}
    blocks = []
    for name, trans, _ in obj.transformers_:
        indices = [int(i) for i in obj._transformer_to_input_indices[name]]
        if _is_keyword(trans, "drop") or not indices:
            continue
        label = "remainder" if name == "remainder" else f"transformers[{name!r}]"
        node = _block(trans, ctx, indices, label)
        blocks.append((indices, _weighted(node, weights.get(name), ctx), node.n_out))
    return _stacked(blocks)


def _feature_union(obj: Any, ctx: _Ctx) -> _Node:
    weights = obj.transformer_weights or {}
    blocks = []
    for name, trans in obj.transformer_list:
        if _is_keyword(trans, "drop"):
            continue
        node = _block(trans, ctx, list(range(ctx.n_in)), f"transformer_list[{name!r}]")
        blocks.append((None, _weighted(node, weights.get(name), ctx), node.n_out))
    return _stacked(blocks)


@functools.cache
def _forms() -> dict[type, Callable[[Any, _Ctx], _Node]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
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

    return {
        StandardScaler: _standard_scaler,
        MinMaxScaler: _min_max_scaler,
        MaxAbsScaler: _max_abs_scaler,
        RobustScaler: _robust_scaler,
        SimpleImputer: _simple_imputer,
        MissingIndicator: _missing_indicator,
        OneHotEncoder: _one_hot_encoder,
        OrdinalEncoder: _ordinal_encoder,
        KBinsDiscretizer: _kbins_discretizer,
        PolynomialFeatures: _polynomial_features,
        FunctionTransformer: _function_transformer,
        Pipeline: _pipeline,
        ColumnTransformer: _column_transformer,
        FeatureUnion: _feature_union,
    }


def _compile(obj: Any, ctx: _Ctx) -> _Node:
    form = _forms().get(type(obj))
    if form is None:
        ctx.build.problem(
            ctx.path, f"{class_path(obj)} has no TensorFlow form; known: {_known(_forms())}"
        )
        return _Node(lambda frame: frame, 0)
    return form(obj, ctx)


def _known(table: dict[type, Any]) -> str:
    return ", ".join(sorted(cls.__name__ for cls in table))


# ---------------------------------------------------------------------------------------
# Postprocess forms
# ---------------------------------------------------------------------------------------


def _first_argmax(scores: Any) -> Any:
    """``np.argmax(scores, axis=-1)``: the first maximum, or the first NaN if any."""
    tf = _tf()
    k = int(scores.shape[-1])
    positions = tf.range(k, dtype=tf.int64)
    big = tf.constant(k, tf.int64)
    if _np(scores).kind == "f":
        is_nan = tf.math.is_nan(scores)
        first_nan = tf.reduce_min(tf.where(is_nan, positions, big), axis=-1)
        top = tf.reduce_max(tf.where(is_nan, tf.cast(-np.inf, scores.dtype), scores), axis=-1)
        first_top = tf.reduce_min(tf.where(scores == top[..., None], positions, big), axis=-1)
        return tf.where(first_nan < big, first_nan, first_top)
    top = tf.reduce_max(scores, axis=-1)
    return tf.reduce_min(tf.where(scores == top[..., None], positions, big), axis=-1)


def _classes(obj: Any, where: str, build: _Build) -> Callable[[], Any]:
    """A function making the classes constant (text as tf.string), checked now."""
    classes = np.asarray(obj.classes_)
    if classes.dtype.kind in "OUS":
        values = classes.tolist()
        if not all(isinstance(v, str) for v in values):
            build.problem(where, "classes that are neither all text nor all numbers")
        return lambda: _tf().constant(values, dtype=_tf().string)
    if classes.dtype.kind not in "biuf":
        build.problem(where, f"classes of dtype {classes.dtype} have no TensorFlow form")
    return lambda: _tf().constant(classes)


def _score_shape(shape: Sequence[int | None]) -> tuple[int, ...] | None:
    dims = list(shape)[1:]
    return None if any(d is None for d in dims) else tuple(int(d) for d in dims)


def _post_label_encoder(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    if mode != "class_ids":
        build.problem(where, f"a LabelEncoder in mode {mode!r} (expected 'class_ids')")
        return None
    dims = _score_shape(shape)
    n_classes = len(obj.classes_)
    if dims is None:
        build.problem(where, f"model outputs of unknown shape {tuple(shape)}")
        return None
    argmax = len(dims) >= 1 and dims[-1] > 1
    if argmax and dims[-1] > n_classes:
        build.problem(
            where, f"the model scores {dims[-1]} classes but the LabelEncoder knows {n_classes}"
        )
    if not argmax and (math.prod(dims) != 1 or n_classes < 2):
        build.problem(where, f"a 0.5 threshold on outputs {dims} with {n_classes} class(es)")

    make_classes = _classes(obj, where, build)

    def run(values: Any) -> Any:
        tf = _tf()
        classes = make_classes()
        if argmax:
            ids = _first_argmax(values)
        else:
            flat = tf.reshape(values, [-1])
            ids = tf.cast(flat > _scalar(0.5, flat), tf.int64)
        return tf.gather(classes, ids)

    return run


def _post_label_binarizer(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    dims = _score_shape(shape)
    n_classes = len(obj.classes_)
    kind = obj.y_type_
    if obj.sparse_input_ or kind not in ("multiclass", "binary", "multilabel-indicator"):
        build.problem(where, f"a LabelBinarizer of y_type_={kind!r} (sparse={obj.sparse_input_})")
        return None
    if dims is None or len(dims) != 1:
        build.problem(where, f"model outputs of shape {tuple(shape)}: LabelBinarizer needs 2-D")
        return None
    if kind == "binary" and dims[0] > 2:
        build.problem(where, f"binary LabelBinarizer on {dims[0]} score columns")
    if kind == "multilabel-indicator" and dims[0] != n_classes:
        build.problem(where, f"{dims[0]} score columns for {n_classes} labels")
    threshold = (obj.pos_label + obj.neg_label) / 2.0
    make_classes = _classes(obj, where, build)

    def run(values: Any) -> Any:
        tf = _tf()
        classes = make_classes()
        if kind == "multiclass":
            ids = tf.clip_by_value(_first_argmax(values), 0, n_classes - 1)
            return tf.gather(classes, ids)
        floats = values if _np(values).kind == "f" else tf.cast(values, np.float64)
        above = tf.cast(floats > _scalar(threshold, floats), tf.int64)
        if kind == "multilabel-indicator":
            return above
        if dims[0] == 2:
            return tf.gather(classes, above[:, 1])
        if n_classes == 1:
            return tf.fill(tf.shape(above)[:1], classes[0])
        return tf.gather(classes, tf.reshape(above, [-1]))

    return run


def _scaler_shape_ok(obj: Any, shape: Any, where: str, build: _Build) -> bool:
    dims = _score_shape(shape)
    if dims is None or len(dims) != 1 or dims[0] != obj.n_features_in_:
        build.problem(
            where,
            f"inverse_transform expects {obj.n_features_in_} column(s); the model outputs "
            f"shape {tuple(shape)}",
        )
        return False
    return True


def _as_float(values: Any) -> Any:
    """check_array(dtype=FLOAT_DTYPES): float32/float64 stay, the rest becomes float64."""
    tf = _tf()
    return values if _np(values) in (np.float32, np.float64) else tf.cast(values, np.float64)


def _post_standard_scaler(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    if not _scaler_shape_ok(obj, shape, where, build):
        return None

    def run(values: Any) -> Any:
        tf = _tf()
        x = _as_float(values)
        if obj.with_std:
            x = x * tf.constant(obj.scale_.astype(_np(x)))
        if obj.with_mean:
            x = x + tf.constant(obj.mean_.astype(_np(x)))
        return x

    return run


def _post_min_max_scaler(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    if not _scaler_shape_ok(obj, shape, where, build):
        return None

    def run(values: Any) -> Any:
        x = _inplace(lambda a, b: a - b, _as_float(values), obj.min_)
        return _inplace(lambda a, b: a / b, x, obj.scale_)

    return run


def _post_max_abs_scaler(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    if not _scaler_shape_ok(obj, shape, where, build):
        return None
    return lambda values: _inplace(lambda a, b: a * b, _as_float(values), obj.scale_)


def _post_robust_scaler(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    if not _scaler_shape_ok(obj, shape, where, build):
        return None

    def run(values: Any) -> Any:
        x = _as_float(values)
        if obj.with_scaling:
            x = _inplace(lambda a, b: a * b, x, obj.scale_)
        if obj.with_centering:
            x = _inplace(lambda a, b: a + b, x, obj.center_)
        return x

    return run


def _post_function_transformer(obj: Any, mode: str, shape: Any, where: str, build: _Build):
    func = obj.inverse_func
    problem = _function_problem(func, obj.inv_kw_args, "inverse_func")
    if problem:
        build.problem(where, problem)
        return None
    if func is None:
        return lambda values: values
    return lambda values: _apply_ufunc(func, values, where)


@functools.cache
def _post_forms() -> dict[type, Callable[..., Any]]:
    from sklearn.preprocessing import (
        FunctionTransformer,
        LabelBinarizer,
        LabelEncoder,
        MaxAbsScaler,
        MinMaxScaler,
        RobustScaler,
        StandardScaler,
    )

    return {
        LabelEncoder: _post_label_encoder,
        LabelBinarizer: _post_label_binarizer,
        StandardScaler: _post_standard_scaler,
        MinMaxScaler: _post_min_max_scaler,
        MaxAbsScaler: _post_max_abs_scaler,
        RobustScaler: _post_robust_scaler,
        FunctionTransformer: _post_function_transformer,
    }


DECODERS = ("LabelEncoder", "LabelBinarizer")


def supported_classes() -> dict[str, list[str]]:
    """The scikit-learn classes with a TensorFlow form, by stage."""
    return {
        "preprocess": sorted(cls.__name__ for cls in _forms()),
        "postprocess": sorted(cls.__name__ for cls in _post_forms()),
    }


# ---------------------------------------------------------------------------------------
# The exported graph
# ---------------------------------------------------------------------------------------


def _postprocess_modes(bundle: Any) -> list[str]:
    try:
        return [record.get("mode", "inverse_transform") for record in bundle.manifest.postprocess]
    except BundleError:  # not saved yet: the modes Bundle itself would record
        return [postprocess_mode(step) for step in bundle.postprocess]


def _model_specs(bundle: Any) -> tuple[list[dict], list[dict]]:
    from ..model import model_signature

    try:
        return model_signature(bundle.model)
    except BundleError:
        manifest = bundle.manifest
        return list(manifest.model["inputs"]), list(manifest.model["outputs"])


class _Plan:
    """The validated pieces of the graph, built before tracing (tables included)."""

    def __init__(self, bundle: Any, missing_token: str):
        self.tf = _tf()
        self.build = build = _Build(missing_token)
        problems = build.problems
        self.inputs = _inputs(bundle.input_schema, problems)
        self.known = {
            spec.key: _Lookup(
                [v for v in spec.known if v is not None or spec.is_text],
                _Ctx(build, f"input column {spec.column!r}", 1, None),
                "known values",
            )
            for spec in self.inputs
            if spec.known is not None
        }
        self.model = bundle.model
        self.model_inputs, self.model_outputs = _model_specs(bundle)
        model_outputs = self.model_outputs
        for what, specs in (("inputs", self.model_inputs), ("outputs", model_outputs)):
            if len(specs) != 1:
                problems.append(
                    f"the model has {len(specs)} {what}; export supports single-input, "
                    "single-output models"
                )
        self.names = None
        self.bundle_steps = list(bundle.preprocess)
        self.steps = [self._step(step, i) for i, step in enumerate(bundle.preprocess)]
        self.post = self._postprocess(bundle, model_outputs[0]["shape"] if model_outputs else [])
        last = type(bundle.postprocess[-1]).__name__ if bundle.postprocess else None
        self.output = None if last is None else "labels" if last in DECODERS else "predictions"

    def _step(self, step: Any, index: int) -> _Node:
        path = f"preprocess[{index}] {type(step).__name__}"
        n_in = getattr(step, "n_features_in_", None)
        if n_in is None:
            self.build.problem(path, "the step does not record n_features_in_ (is it fitted?)")
            return _Node(lambda frame: frame, 0)
        names = getattr(step, "feature_names_in_", None) if index == 0 else None
        if names is not None:
            self.names = tuple(str(n) for n in names)
        return _compile(step, _Ctx(self.build, path, int(n_in), self.names if index == 0 else None))

    def _postprocess(self, bundle: Any, shape: Sequence[int | None]) -> list[Callable]:
        runs = []
        modes = _postprocess_modes(bundle)
        for index, (step, mode) in enumerate(zip(bundle.postprocess, modes, strict=True)):
            where = f"postprocess[{index}] {type(step).__name__}"
            form = _post_forms().get(type(step))
            if form is None:
                known = f"{class_path(step)} has no TensorFlow form; known: {_known(_post_forms())}"
                self.build.problem(where, known)
                continue
            if index > 0:
                self.build.problem(where, "a second postprocess step (export supports one)")
                continue
            run = form(step, mode, shape, where, self.build)
            if run is not None:
                runs.append(run)
        return runs

    def signature(self) -> dict[str, Any]:
        tf = self.tf
        return {
            spec.key: tf.TensorSpec(
                [None, *spec.shape], tf.string if spec.wire == TEXT else spec.wire, name=spec.key
            )
            for spec in self.inputs
        }

    # -- the traced body -----------------------------------------------------------------

    def serve(self, features: dict[str, Any]) -> dict[str, Any]:
        """Signature tensors -> ``{"scores", "labels" | "predictions"}``."""
        tf = self.tf
        self.build.checks = []
        scores = self._model(self._preprocess(self._read(features)))
        outputs = {"scores": scores}
        if self.output:
            result = scores
            for run in self.post:
                result = run(result)
            outputs[self.output] = result
        with tf.control_dependencies(self.build.checks):  # every check runs before we answer
            return {key: tf.identity(value) for key, value in outputs.items()}

    def _read(self, features: dict[str, Any]) -> list[Any]:
        """The columns the steps see, in contract order, after the contract's checks."""
        tf = self.tf
        tensors = [features[spec.key] for spec in self.inputs]
        if len(tensors) > 1:
            rows = tf.stack([tf.shape(t)[0] for t in tensors])
            self.build.check(
                tf.reduce_all(tf.equal(rows, rows[0])),
                "All input columns must have the same number of rows; got (in signature order):",
                rows,
            )
            with tf.control_dependencies(self.build.checks[-1:]):  # before anything stacks
                tensors = [tf.identity(t) for t in tensors]
        return [self._column(spec, t) for spec, t in zip(self.inputs, tensors, strict=True)]

    def _column(self, spec: _Input, tensor: Any) -> Any:
        tf = self.tf
        build = self.build
        label = "The input" if spec.column == ARRAY_INPUT else f"Column {spec.column!r}"
        if spec.is_text:
            missing = tf.equal(tensor, build.missing_token)
            column = _Text(tensor, missing, spec.sentinel)
            if not spec.allows_missing:
                build.check(
                    tf.logical_not(tf.reduce_any(missing)),
                    f"{label} has missing values ({_token_label(build.missing_token)}), but "
                    "training had none and no preprocessing step imputes them.",
                )
        else:
            column = tensor
            if spec.dtype.kind == "f" and not spec.allows_missing:
                build.check(
                    tf.logical_not(tf.reduce_any(tf.math.is_nan(tensor))),
                    f"{label} has missing values (NaN), but training had none and no "
                    "preprocessing step imputes them.",
                )
            if spec.dtype.kind in "iu" and spec.wire != spec.dtype:
                info, wide = np.iinfo(spec.dtype), np.iinfo(np.int64)
                low, high = max(int(info.min), wide.min), min(int(info.max), wide.max)
                inside = tf.logical_and(tensor >= low, tensor <= high)
                build.check(
                    tf.reduce_all(inside),
                    f"{label} has values outside the range of its training dtype "
                    f"{spec.dtype} [{low}, {high}]:",
                    tf.boolean_mask(tensor, ~inside)[:SAMPLE],
                )
                column = tf.cast(tensor, spec.dtype)
        lookup = self.known.get(spec.key)
        if lookup is not None:
            bad = lookup(column) < 0
            if spec.is_text:
                bad = tf.logical_and(bad, ~column.missing)
            elif spec.dtype.kind == "f":
                bad = tf.logical_and(bad, ~tf.math.is_nan(tensor))
            build.check(
                tf.logical_not(tf.reduce_any(bad)),
                f"{label} has values training never saw; it accepts only its "
                f"{len(spec.known)} known values:",
                tf.boolean_mask(tensor, bad)[:SAMPLE],
            )
        return column

    def _first_frame(self, columns: list[Any]) -> _Frame:
        """The first step's input: the contract's columns, by its feature names if any."""
        tf = self.tf
        if len(self.inputs) == 1 and self.inputs[0].column == ARRAY_INPUT:
            (array,) = columns
            if array.shape.rank != 2:
                raise _NoForm(
                    "preprocess steps need 2-D input; the array input has shape "
                    f"{tuple(array.shape.as_list())}"
                )
            return _Frame.of(array)
        if self.names is not None:
            by_name = {str(spec.column): c for spec, c in zip(self.inputs, columns, strict=True)}
            absent = [name for name in self.names if name not in by_name]
            if absent:
                raise _NoForm(f"preprocess[0] reads columns the input contract lacks: {absent}")
            columns = [by_name[name] for name in self.names]
        first = columns[0].values if isinstance(columns[0], _Text) else columns[0]
        return _Frame(tf.shape(first)[0], columns=columns)

    def _preprocess(self, columns: list[Any]) -> Any:
        if not self.steps:
            if len(self.inputs) == 1 and self.inputs[0].column == ARRAY_INPUT:
                return columns[0]
            return self._first_frame(columns).full("the model")
        frame = self._first_frame(columns)
        x: Any = None
        for index, node in enumerate(self.steps):
            if index > 0:
                frame = _Frame.of(x)
            expected = self._n_in(index)
            if frame.width != expected:
                raise _NoForm(
                    f"preprocess[{index}] was fitted on {expected} columns; it would receive "
                    f"{frame.width}"
                )
            x = node.run(frame).to(np.float64, f"the output of preprocess[{index}]")
            if int(x.shape[1]) != node.n_out:
                raise _NoForm(
                    f"preprocess[{index}] produced {int(x.shape[1])} columns in the graph; "
                    f"scikit-learn produces {node.n_out}"
                )
        return x

    def _n_in(self, index: int) -> int:
        return int(self.bundle_steps[index].n_features_in_)

    def _model(self, x: Any) -> Any:
        tf = self.tf
        spec = self.model_inputs[0]
        expected, got = list(spec["shape"]), x.shape.as_list()
        if len(got) != len(expected) or any(
            e is not None and g is not None and e != g
            for e, g in zip(expected[1:], got[1:], strict=True)
        ):
            raise _NoForm(
                f"the preprocessed input has shape {tuple(got)}, but the model expects "
                f"{tuple(expected)}"
            )
        x = tf.cast(x, spec["dtype"])
        output = self.model_outputs[0]
        dims = _score_shape(output["shape"])
        if dims is None:
            return self._call_model(x)
        # Like Bundle.predict, 0 rows never reach the model (some kernels, e.g. oneDNN
        # convolutions, fail on an empty batch).
        empty = tf.zeros([0, *dims], dtype=_np(np.dtype(output["dtype"])))
        if empty.dtype in (tf.float16, tf.bfloat16):
            empty = tf.cast(empty, tf.float32)
        return tf.cond(tf.shape(x)[0] > 0, lambda: self._call_model(x), lambda: empty)

    def _call_model(self, x: Any) -> Any:
        tf = self.tf
        result = self.model(x, training=False)
        if isinstance(result, dict):
            (result,) = result.values()
        elif isinstance(result, (list, tuple)):
            (result,) = result
        if result.dtype in (tf.float16, tf.bfloat16):  # as the inference function does
            result = tf.cast(result, tf.float32)
        return result


def _trace(plan: _Plan, bundle: Any) -> tuple[Any, Any]:
    """The exported module and its concrete serving function (nothing written yet)."""
    tf = plan.tf

    class ExportedBundle(tf.Module):
        """A keras-bundle exported as one graph: the Keras model and the lookup tables."""

    module = ExportedBundle(name=re.sub(r"\W", "_", f"keras_bundle_{bundle.name}"))
    module.model = plan.model
    module.tables = list(plan.build.tables)
    module.serve = tf.function(plan.serve, input_signature=[plan.signature()], autograph=False)
    return module, module.serve.get_concrete_function()


def _refuse(bundle: Any, problems: Sequence[str]) -> UnsupportedFormatError:
    label = f"bundle {bundle.name!r}"
    supported = supported_classes()
    return UnsupportedFormatError(
        f"Cannot export {label} as one TensorFlow graph: {len(problems)} part(s) have no "
        f"TensorFlow form:\n{bullet_list(problems)}\n"
        f"Preprocess steps with a TensorFlow form: {', '.join(supported['preprocess'])}; "
        f"postprocess: {', '.join(supported['postprocess'])}. Nothing was written. "
        "Replace these parts, or serve the bundle with `bundle serve` instead.",
        found=list(problems),
        supported=supported,
    )


def _info(bundle: Any, plan: _Plan, concrete: Any) -> dict[str, Any]:
    try:
        version = bundle.manifest.version
    except BundleError:
        version = bundle.version
    outputs = {
        key: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for key, spec in concrete.structured_outputs.items()
    }
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "bundle": {"name": bundle.name, "version": version},
        "signature": SIGNATURE_KEY,
        "missing_token": plan.build.missing_token,
        "inputs": [
            {
                "name": spec.key,
                "column": spec.column,
                "dtype": "string" if spec.is_text else spec.wire.name,
                "training_dtype": None if spec.is_text else spec.dtype.name,
                "shape": [None, *spec.shape],
            }
            for spec in plan.inputs
        ],
        "outputs": outputs,
    }


def export_saved_model(
    bundle: Any,
    out: str | os.PathLike[str],
    *,
    missing_token: str = DEFAULT_MISSING_TOKEN,
    overwrite: bool = False,
) -> Path:
    """Write `bundle` as one TensorFlow SavedModel: raw features in, labels and scores out.

    The graph replays the bundle's input checks, preprocess steps, model and postprocess
    steps (see the module docstring for the signature and its semantics). Everything is
    validated and traced before anything is written; the SavedModel is written into a
    temporary directory next to `out` and renamed into place, so `out` never holds a
    partial export. TF Serving expects ``<model_base_path>/<integer version>/``: pass
    e.g. ``serving/churn/1``.

    Args:
        bundle: a `Bundle` (loaded or just built).
        out: the SavedModel directory to create.
        missing_token: the string that stands for a missing value in text inputs (JSON has
            no missing string). Refused if it is also a category the bundle knows.
        overwrite: replace `out` if it exists.

    Returns:
        The SavedModel directory.

    Raises:
        UnsupportedFormatError: some step, option or input has no TensorFlow form (the
            message lists every such part); nothing is written.
        BundleError: `out` exists and `overwrite` is False.

    Example:
        >>> export_saved_model(Bundle.load("models/churn"), "serving/churn/1")
        PosixPath('serving/churn/1')
    """
    out = Path(out)
    if not isinstance(missing_token, str):
        raise TypeError(f"missing_token must be a str; got {type(missing_token).__name__}.")
    if out.exists() and not overwrite:
        raise ExportError(
            f"{out} already exists. Choose a new directory (TF Serving loads "
            "<base>/<integer version>/), or pass overwrite=True."
        )
    plan = _Plan(bundle, missing_token)
    problems = plan.build.problems
    module = concrete = None
    if not problems:
        try:
            module, concrete = _trace(plan, bundle)
        except _NoForm as exc:
            problems.append(str(exc))
        except Exception as exc:  # TensorFlow's errors are not for the caller to parse
            raise ExportError(
                f"Building the TensorFlow graph of bundle {bundle.name!r} failed: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}\nThis is a bug in "
                "keras-bundle's export (nothing was written); the original exception is "
                "chained below."
            ) from exc
    token = plan.build.missing_token
    clash = [
        f"{where}: the missing-value token {token!r} is also a known value"
        for value, where in plan.build.text_constants.items()
        if value == token
    ] + [
        f"input column {spec.column!r}: the missing-value token {token!r} is a value seen in "
        "training; pass another missing_token="
        for spec in plan.inputs
        if spec.is_text and token in spec.seen
    ]
    problems.extend(p for p in clash if p not in problems)
    if problems:
        raise _refuse(bundle, problems)
    return _write(module, concrete, _info(bundle, plan, concrete), out, overwrite=overwrite)


def _write(module: Any, concrete: Any, info: dict[str, Any], out: Path, *, overwrite: bool) -> Path:
    """Save into a staging directory next to `out`, then rename it into place."""
    tf = _tf()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        target = staging / "saved_model"
        try:
            tf.saved_model.save(module, str(target), signatures={SIGNATURE_KEY: concrete})
        except Exception as exc:
            raise ExportError(
                f"TensorFlow could not save the exported graph: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]}\nNothing was written to {out}."
            ) from exc
        info_path = target / INFO_FILE
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        if not out.exists():
            os.replace(target, out)
        elif not overwrite:
            raise ExportError(f"{out} appeared while exporting; nothing was replaced.")
        else:
            previous = staging / "previous"
            os.replace(out, previous)
            try:
                os.replace(target, out)
            except OSError:
                os.replace(previous, out)  # put the previous export back
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
