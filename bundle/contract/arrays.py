"""`ArraySchema`: one ndarray per sample batch, with shape hints for near misses."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .base import SCHEMA_READERS, InputSchema, _Checked
from .columns import _ARRAY_FIELDS, ColumnSpec, _check_fields
from .convert import _array_values, _convert, _values_from_array
from .dtypes import ALL_ARRAYS, KINDS
from .messages import _fmt_shape, _Problem, _table, _unsupported, _Where
from .tabular import _missing_label

_ARRAY_FORMS = (
    "a numpy array of shape (n, *sample_shape), or one sample without the batch axis",
    "a (nested) list of numbers",
    "a pandas DataFrame or Series, for samples that are 1-D (columns by position)",
)


@dataclass(frozen=True)
class ArraySchema(InputSchema):
    """An ndarray input: per-sample shape (without the batch axis) and dtype.

    Attributes:
        shape: the per-sample shape; None for a dimension that may vary.
        dtype: the training numpy dtype (e.g. "float32"); None when unknown.
        value_kind: the kind of the values (one of `KINDS`, never "categorical").
        has_missing: whether the example held NaN; None when unknown (not checked).
        missing_handled: a preprocessing step imputes NaN, so NaN passes.
        refuses_infinity: the preprocessing refuses infinity, so the contract does.
    """

    shape: tuple[int | None, ...]
    dtype: str | None = None
    value_kind: str = "any"
    has_missing: bool | None = None
    missing_handled: bool = False
    refuses_infinity: bool = False
    kind: ClassVar[str] = "array"

    def __post_init__(self) -> None:
        if self.value_kind == "categorical" or self.value_kind not in KINDS:
            raise ValueError(f"Unknown array value kind {self.value_kind!r}.")
        if any(dim is not None and (not isinstance(dim, int) or dim < 0) for dim in self.shape):
            raise ValueError(f"An array shape holds sizes or None, got {self.shape!r}.")
        self._spec  # noqa: B018 -- fail now on an unknown dtype, not at predict time

    @cached_property
    def _spec(self) -> ColumnSpec:
        return ColumnSpec(
            name=ALL_ARRAYS,
            kind=self.value_kind if self.dtype is not None else "any",
            dtype=self.dtype,
            has_missing=self.has_missing,
            missing_handled=self.missing_handled,
            refuses_infinity=self.refuses_infinity and self.dtype is not None,
        )

    def _already_canonical(self, array: np.ndarray) -> bool:
        """True for a batch in the training dtype and shape that needs no look at its values.

        The fast path for images and feature matrices: integers cannot hold NaN, and floats
        are scanned only when training had no missing values and nothing imputes them.
        """
        if self.dtype is None or array.dtype != np.dtype(self.dtype):
            return False
        if array.ndim != len(self.shape) + 1 or any(
            expected is not None and expected != got
            for expected, got in zip(self.shape, array.shape[1:], strict=True)
        ):
            return False
        if array.dtype.kind == "f":
            nan_refused, inf_refused = not self._spec.allows_missing, self.refuses_infinity
            if nan_refused and inf_refused:
                return bool(np.isfinite(array).all())
            if nan_refused or inf_refused:
                return not (np.isnan if nan_refused else np.isinf)(array).any()
            return True
        return array.dtype.kind in "biuf"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "value_kind": self.value_kind,
            "has_missing": self.has_missing,
            "missing_handled": self.missing_handled,
            **({"refuses_infinity": True} if self.refuses_infinity else {}),
        }

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> ArraySchema:
        _check_fields(d, _ARRAY_FIELDS, {"kind", "shape"}, "an array schema")
        values = {key: value for key, value in d.items() if key != "kind"}
        return cls(**{**values, "shape": tuple(d["shape"])})

    def n_rows(self, canonical: np.ndarray) -> int:
        return int(canonical.shape[0])

    def __str__(self) -> str:
        row = (
            "(array)",
            self.value_kind,
            self.dtype or "?",
            _missing_label(self._spec),
            _fmt_shape((None, *self.shape)),
        )
        return "Array input\n" + _table(("input", "kind", "dtype", "missing", "shape"), [row])

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        if isinstance(raw, np.ndarray) and self._already_canonical(raw):
            return _Checked(raw, [])
        array, problems = _read_array(raw, self.shape, subject)
        if array is None:
            return _Checked(None, problems)
        array, problems = _fit_batch_axis(array, self.shape, subject)
        where = _Where(subject, None, array.shape, unit="sample")
        converted = _convert(_values_from_array(array), self._spec, where)
        problems += converted.problems
        if problems:
            return _Checked(None, problems)
        if self._spec.kind == "any":
            return _Checked(array, [])
        return _Checked(_array_values(converted, self._spec).reshape(array.shape), [])


def _read_array(
    raw: Any, shape: tuple[int | None, ...], subject: str
) -> tuple[np.ndarray | None, list[_Problem]]:
    reader = next((read for types, read in _ARRAY_READERS if isinstance(raw, types)), None)
    if reader is None:
        return None, [_unsupported(raw, subject, _ARRAY_FORMS)]
    try:
        array = reader(raw, shape)
    except (TypeError, ValueError, OverflowError) as exc:
        reason = str(exc).splitlines()[0]
        if "inhomogeneous" in reason:
            reason = "its nested lists have different lengths"
        text = (
            f"{subject} could not be read as an array: {reason}.\n"
            f"Every sample must have shape {_fmt_shape(shape)}."
        )
        return None, [_Problem(text)]
    if array.size == 0 and array.ndim == 1:
        # An empty list is zero samples, whatever the sample shape.
        array = np.empty((0, *(dim or 0 for dim in shape)), dtype=array.dtype)
    return array, []


def _array_from_frame(raw: pd.DataFrame, shape: tuple[int | None, ...]) -> np.ndarray:
    if len(shape) != 1:
        raise ValueError(
            f"a DataFrame holds 1-D samples, but each sample has shape {_fmt_shape(shape)}"
        )
    return raw.to_numpy()


_ARRAY_READERS: tuple[tuple[type | tuple[type, ...], Callable[..., np.ndarray]], ...] = (
    (np.ndarray, lambda raw, shape: raw),
    (pd.DataFrame, _array_from_frame),
    (pd.Series, lambda raw, shape: raw.to_numpy()),
    ((list, tuple, int, float, str, np.generic), lambda raw, shape: np.asarray(raw)),
)


def _fit_batch_axis(
    array: np.ndarray, shape: tuple[int | None, ...], subject: str
) -> tuple[np.ndarray, list[_Problem]]:
    """The array with its batch axis (added for one sample), or the shape problem."""
    batched = array[np.newaxis] if array.ndim == len(shape) else array
    if batched.ndim == len(shape) + 1 and _shape_matches(batched.shape[1:], shape):
        return batched, []
    return array, [_shape_problem(array.shape, shape, subject)]


def _shape_matches(got: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(got) == len(expected) and all(
        e is None or g == e for g, e in zip(got, expected, strict=True)
    )


def _shape_problem(got: tuple[int, ...], shape: tuple[int | None, ...], subject: str) -> _Problem:
    expected = _fmt_shape((None, *shape))
    text = f"{subject} has shape {_fmt_shape(got)}, but the bundle expects {expected}"
    if len(shape) == 1 and len(got) == 2:
        text += f": {got[1]:,} features per sample instead of {shape[0]:,}."
        remedy = f"Pass all {shape[0]:,} features of each sample, in training order."
    else:
        text += "."
        remedy = _reshape_hint(got, shape) or (
            f"Pass an array of shape (n, {', '.join(map(str, shape))}), "
            f"or one sample of shape {_fmt_shape(shape)}."
        )
    return _Problem(f"{text}\n{remedy}", _first_bad_axis(got, shape))


def _first_bad_axis(got: tuple[int, ...], shape: tuple[int | None, ...]) -> str:
    expected = (None, *shape)
    if len(got) != len(expected):
        return "ndim"
    return next(
        (
            f"axis {i}"
            for i, (g, e) in enumerate(zip(got, expected, strict=True))
            if e is not None and g != e
        ),
        "ndim",
    )


def _reshape_hint(got: tuple[int, ...], shape: tuple[int | None, ...]) -> str | None:
    """A fix for a sample that holds the right values in the wrong shape, when certain."""
    if None in shape or not got or len(shape) < 2:
        return None
    return next((hint for make in _HINTS if (hint := make(got, shape)) is not None), None)


def _flattened_hint(got: tuple[int, ...], shape: tuple[int, ...]) -> str | None:
    size = math.prod(shape)
    if got[-1] != size or len(got) > 2:
        return None
    noun = "image" if len(shape) in (2, 3) else "sample"
    dims = ", ".join(map(str, shape))
    product = "*".join(map(str, shape))
    return f"{size} = {product}: the {noun} looks flattened. Use x.reshape(-1, {dims})."


def _missing_channel_hint(got: tuple[int, ...], shape: tuple[int, ...]) -> str | None:
    if shape[-1] != 1 or shape[:-1] not in (got, got[1:]):
        return None
    return f"The channel axis is missing. Use x.reshape(-1, {', '.join(map(str, shape))})."


def _channels_first_hint(got: tuple[int, ...], shape: tuple[int, ...]) -> str | None:
    if len(shape) != 3:
        return None
    channels_first = (shape[2], shape[0], shape[1])
    axis = {channels_first: 0, (*got[:1], *channels_first): 1}.get(got)
    if axis is None:
        return None
    return (
        "The channel axis looks first (channels-first); the bundle expects it last. "
        f"Use np.moveaxis(x, {axis}, -1)."
    )


_HINTS = (_flattened_hint, _missing_channel_hint, _channels_first_hint)


SCHEMA_READERS[ArraySchema.kind] = ArraySchema._read
