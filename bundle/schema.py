"""The input contract of a bundle: infer it from an example, validate and coerce raw input.

At prediction time every raw input passes through `InputSchema.coerce` first::

    raw -> schema.coerce(raw) -> canonical -> preprocess steps -> model

`coerce` turns every accepted raw form into ONE canonical form, or raises `SchemaError`
listing every problem it found before anything downstream sees the data. Canonical forms:

- tabular: a DataFrame with exactly the training columns, in training order, each in its
  training dtype, with the missing-value sentinel training used (NaN or None);
- array: an ndarray of shape ``(n, *per_sample_shape)`` in the training dtype;
- multi: a dict ``{model input name: canonical form of that input}``.

Accepted raw forms
------------------
| schema  | raw input                                 | read as                             |
|---------|-------------------------------------------|-------------------------------------|
| tabular | pandas DataFrame                          | columns by name                     |
| tabular | list of dicts (JSON records)              | one row per dict, columns by name   |
| tabular | dict of column -> list/array (columnar)   | columns by name                     |
| tabular | dict of column -> value, pandas Series    | one row, columns by name            |
| tabular | 2-D ndarray, list of lists                | columns by POSITION, training order |
| tabular | 1-D ndarray or list as wide as the table  | one row, columns by position        |
| array   | ndarray, (nested) list, scalar            | as an array                         |
| array   | DataFrame or Series (1-D samples only)    | to_numpy(), columns by position     |
| multi   | dict of model input name -> any of above  | each input by its own schema        |

Empty input (0 rows) gives an empty canonical result with the training columns or shape.

Coercions (all lossless; anything not listed is refused)
--------------------------------------------------------
| from                                   | to                     | only when                   |
|----------------------------------------|------------------------|-----------------------------|
| bool, int                              | float                  | always                      |
| float64                                | float32 (or float16)   | every finite value is in    |
|                                        |                        | the target's finite range   |
| int, bool                              | narrower int, uint8... | every value fits the target |
| float                                  | int                    | every value is a whole      |
|                                        |                        | number that fits (JSON 3.0; |
|                                        |                        | nulls make ints float)      |
| object/str holding numbers ("3.5")     | float, int             | EVERY non-missing value     |
|                                        |                        | converts ("nan", "" do not) |
| pandas nullable (Int64, Float64,       | the training dtype     | always; pd.NA becomes the   |
| boolean, string), pyarrow-backed       |                        | training missing value      |
| None, NaN, pd.NA in a text column      | the training sentinel  | always: None or NaN, as     |
|                                        |                        | training used (NaN if none) |
| text in any string or categorical dtype| the training text dtype| every value is a str        |
| any values                             | the training category  | every value is one of its   |
|                                        |                        | categories                  |
| datetimes of any unit or timezone      | the training datetime  | same instants (tz converted)|
|                                        |                        | and precision; naive<->aware|
|                                        |                        | is refused                  |
| ISO-8601 strings, datetime objects     | the training datetime  | every value parses          |
| int column, allowed missing values     | float64 with NaN       | as pandas itself reads it   |
| bool column, allowed missing values    | object with NaN        | as pandas itself reads it   |
| one sample without the batch axis      | a batch of one         | ndim == per-sample ndim     |
| DataFrame columns in another order     | training order         | always, by name             |
| columns the bundle does not know       | dropped                | with ONE ExtraColumnsWarning|
|                                        |                        | (strict=True refuses them)  |

Nothing is reshaped, rounded, clipped, parsed or re-encoded otherwise.

Refusals
--------
Each is a `SchemaError` naming the column or axis, what was expected, what came, and a
remedy; `coerce` reports all of them at once (``err.problems``), lists capped at 5.

- missing columns (all of them; "did you mean" only when unambiguous); unknown columns
  with ``strict=True``; a column name given twice;
- positional input of the wrong width; array samples of the wrong shape, with a reshape or
  moveaxis hint only when the values exactly fit the expected shape;
- values that are not numbers, whole numbers, booleans, strings or datetimes (the first
  ones, with their positions);
- missing values where training had none and no preprocessing step imputes them;
- values an encoder with ``handle_unknown='error'`` (or a categorical dtype) never saw;
- values outside the training dtype's range (float32 overflow, integer overflow);
- datetimes: naive where training was timezone-aware (or the reverse), lost precision;
- multi-input: missing or unknown input names, inputs with different numbers of rows;
- raw input of an unsupported type (the message lists the accepted ones).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import difflib
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from bundle.errors import MAX_LISTED, ExtraColumnsWarning, SchemaError, bullet_list

__all__ = [
    "ALL_ARRAYS",
    "KINDS",
    "MAX_CATEGORIES",
    "ArraySchema",
    "ColumnSpec",
    "InputSchema",
    "MultiInputSchema",
    "TabularSchema",
    "infer_schema",
    "schema_from_hints",
]

KINDS = ("float", "integer", "bool", "string", "categorical", "datetime", "any")
MAX_CATEGORIES = 1000
ALL_ARRAYS = "*"  # the `missing_handled` key that stands for array input

_MISSING_VALUES: dict[str, Any] = {"nan": np.nan, "none": None}
_NUMBER_TYPES = (str, bool, int, float, np.number, np.bool_, decimal.Decimal)
_DATETIME_TYPES = (str, _dt.date, np.datetime64)
_STRING_DTYPE = re.compile(r"(str|string)\[(python|pyarrow)\]")


# --------------------------------------------------------------------------- dtypes


def _encode_dtype(dtype: Any) -> str:
    """A dtype as text that `_decode_dtype` turns back into the same dtype."""
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"  # its categories are stored next to it
    if isinstance(dtype, pd.StringDtype):
        # str(dtype) hides the storage, and "str" vs "string" differ in their missing value.
        prefix = "string" if dtype.na_value is pd.NA else "str"
        return f"{prefix}[{dtype.storage}]"
    if isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype) == "string":
        return "utf8[pyarrow]"  # pandas reads "string[pyarrow]" as StringDtype
    return str(dtype)


def _decode_dtype(text: str, categories: Sequence[Any] = (), ordered: bool = False) -> Any:
    """The dtype `_encode_dtype` wrote as `text`."""
    if text == "category":
        return pd.CategoricalDtype(list(categories), ordered=ordered)
    match = _STRING_DTYPE.fullmatch(text)
    if match:
        return pd.StringDtype(match[2], na_value=np.nan if match[1] == "str" else pd.NA)
    return pdt.pandas_dtype(text)


def _is_text_dtype(dtype: Any) -> bool:
    return (
        pdt.is_string_dtype(dtype)
        and dtype != np.dtype(object)
        and getattr(dtype, "kind", "") != "S"
    )


# Order matters: the first test that holds names the family.
_FAMILY_TESTS: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("categorical", lambda dtype: isinstance(dtype, pd.CategoricalDtype)),
    ("bool", pdt.is_bool_dtype),
    ("integer", pdt.is_integer_dtype),
    ("float", pdt.is_float_dtype),
    ("datetime", pdt.is_datetime64_any_dtype),
    ("string", _is_text_dtype),
)


def _dtype_family(dtype: Any) -> str:
    """The kind of values a dtype holds; "object" when only the values can tell."""
    return next((family for family, test in _FAMILY_TESTS if test(dtype)), "object")


def _numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype behind a numpy, nullable or pyarrow dtype."""
    if isinstance(dtype, np.dtype):
        return dtype
    return np.dtype(getattr(dtype, "numpy_dtype", object))


def _timezone(dtype: Any) -> Any:
    """The timezone of a datetime dtype (pandas or pyarrow), None when naive."""
    return getattr(dtype, "tz", None) or getattr(getattr(dtype, "pyarrow_dtype", None), "tz", None)


# --------------------------------------------------------------------------- formatting


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _show(value: Any) -> str:
    """A value as it would be typed, cut to 40 characters."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sorted(values: Iterable[Any], key: Callable[[Any], Any] = lambda value: value) -> list[Any]:
    values = list(values)
    try:
        return sorted(values, key=key)
    except TypeError:  # mixed types: order by their text instead
        return sorted(values, key=lambda value: str(key(value)))


def _capped(lines: Sequence[str], total: int) -> str:
    """`lines` (the first of `total` items) as a bullet list with "... (N more)"."""
    text = bullet_list(lines[:MAX_LISTED])
    if total > MAX_LISTED:
        text += f"\n... ({total - MAX_LISTED:,} more)"
    return text


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return str(tuple(shape))


def _fmt_number(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as an aligned text table under `header`."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _json_scalar(value: Any) -> Any:
    """A category or bound as a JSON value (numpy scalars unwrapped, others as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (pd.Timestamp, _dt.date)):
        return value.isoformat()
    return str(value)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like values are never a missing value
        return False


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class _Problem:
    text: str
    column: str | None = None


@dataclass(frozen=True)
class _Where:
    """Where values sit, for messages: the subject and how to name a position."""

    subject: str  # "Column 'age'", "Input", "Input 'image'"
    column: str | None  # SchemaError.column
    shape: tuple[int, ...]  # the raw shape; positions index its flattening
    unit: str = "row"  # "row" for a column, "sample" for an array

    def locate(self, position: int) -> str:
        if self.unit == "row":
            return f"row {position}"
        index = tuple(int(i) for i in np.unravel_index(position, self.shape))
        return f"index {index[0] if len(index) == 1 else index}"

    def per_unit(self, mask: np.ndarray) -> np.ndarray:
        """Which rows/samples have any flagged value."""
        if len(self.shape) <= 1:
            return mask
        return mask.reshape(self.shape[0], math.prod(self.shape[1:])).any(axis=1)

    def problem(self, text: str) -> _Problem:
        return _Problem(text, self.column)


def _schema_error(problems: Sequence[_Problem]) -> SchemaError:
    texts = [problem.text for problem in problems]
    if len(texts) == 1:
        message = texts[0]
    else:
        message = f"Input does not match what the bundle expects ({len(texts)} problems):\n\n"
        message += "\n\n".join(texts)
    return SchemaError(message, problems=texts, column=problems[0].column)


def _unsupported(raw: Any, subject: str, forms: Sequence[str]) -> _Problem:
    return _Problem(
        f"{subject} of type {_type_name(raw)} is not supported. This bundle accepts:\n"
        + bullet_list(forms, limit=len(forms))
    )


def _name_mismatch(
    missing: Sequence[Any],
    extra: Sequence[Any],
    *,
    total: int,
    nouns: tuple[str, str],
    subject: str,
    remedy: str,
) -> str:
    """The STYLE.md message for missing and unknown names, with certain "did you mean"s."""
    missing_noun, extra_noun = nouns
    suggestions = _suggestions(missing, extra)
    lines = []
    if missing:
        lines.append(
            f"{subject} is missing {len(missing):,} of the {_plural(total, missing_noun)} "
            "that the bundle expects:"
        )
        lines.append(_capped([str(name) for name in _sorted(missing)], len(missing)))
        if extra:
            lines.append(
                f"The input also has {_plural(len(extra), extra_noun)} the bundle does not know:"
            )
    elif extra:
        lines.append(f"{subject} has {_plural(len(extra), extra_noun)} the bundle does not know:")
    if extra:
        shown = [
            f"{name}  (did you mean {suggestions[name]!r}?)" if name in suggestions else str(name)
            for name in _sorted(extra)
        ]
        lines.append(_capped(shown, len(extra)))
    lines.append(remedy)
    return "\n".join(lines)


def _suggestions(missing: Sequence[Any], extra: Sequence[Any]) -> dict[Any, Any]:
    """{extra name: missing name} where one is, unambiguously, a misspelling of the other."""
    by_lower: dict[str, list[Any]] = {}
    for name in extra:
        by_lower.setdefault(str(name).lower(), []).append(name)
    claims: dict[Any, list[Any]] = {}
    for name in missing:
        close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=2, cutoff=0.8)
        if len(close) == 1 and len(by_lower[close[0]]) == 1:
            claims.setdefault(by_lower[close[0]][0], []).append(name)
    return {name: wanted[0] for name, wanted in claims.items() if len(wanted) == 1}


# --------------------------------------------------------------------------- column spec


@dataclass(frozen=True)
class ColumnSpec:
    """What training saw in one column of a tabular input (or in an array's values).

    Attributes:
        name: the column name.
        kind: one of `KINDS`; "any" when it cannot be known (values are accepted as given).
        dtype: the training dtype, encoded by `_encode_dtype`; None when unknown.
        has_missing: whether the example held missing values; None when unknown (not checked).
        missing_handled: a preprocessing step imputes this column, so missing values pass.
        missing_value: "nan" or "none", the missing value of an object column at training.
        categories: distinct values seen in a string/categorical column, sorted, at most
            `MAX_CATEGORIES` (or the fitted encoder's categories when there was no example).
        categories_truncated: the example held more distinct values than `categories` lists.
        closed_categories: the only values the column's encoder accepts; None when open.
        dtype_categories: all categories of a categorical dtype, in dtype order.
        ordered: whether the categorical dtype is ordered.
        minimum: the smallest finite value of a numeric column in the example.
        maximum: the largest finite value of a numeric column in the example.
    """

    name: Any
    kind: str = "any"
    dtype: str | None = None
    has_missing: bool | None = None
    missing_handled: bool = False
    missing_value: str | None = None
    categories: tuple[Any, ...] | None = None
    categories_truncated: bool = False
    closed_categories: tuple[Any, ...] | None = None
    dtype_categories: tuple[Any, ...] | None = None
    ordered: bool = False
    minimum: float | int | None = None
    maximum: float | int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown column kind {self.kind!r}; known kinds: {', '.join(KINDS)}.")
        if self.kind != "any" and self.dtype is None:
            raise ValueError(f"Column {self.name!r} of kind {self.kind!r} needs a dtype.")
        if self.missing_value not in (None, *_MISSING_VALUES):
            raise ValueError(f"Unknown missing_value {self.missing_value!r}; use 'nan' or 'none'.")
        for values in (self.closed_categories, self.dtype_categories):
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"Column {self.name!r} lists a category twice.")
        if self.dtype is not None:
            self.pandas_dtype  # noqa: B018 -- fail now on an unknown dtype, not at predict time

    @cached_property
    def pandas_dtype(self) -> Any:
        """The training dtype as a numpy/pandas dtype object (None when unknown)."""
        if self.dtype is None:
            return None
        try:
            return _decode_dtype(self.dtype, self.dtype_categories or (), self.ordered)
        except (TypeError, ValueError, ImportError) as exc:
            raise ValueError(f"Column {self.name!r} has an unknown dtype {self.dtype!r}.") from exc

    @property
    def allows_missing(self) -> bool:
        return self.has_missing is not False or self.missing_handled

    @property
    def known_values(self) -> tuple[Any, ...] | None:
        """The values the column accepts, or None when any value is accepted."""
        if self.kind != "categorical":
            return self.closed_categories
        if self.closed_categories is None:
            return self.dtype_categories
        closed = set(self.closed_categories)
        return tuple(value for value in self.dtype_categories or () if value in closed)

    @property
    def dtype_label(self) -> str:
        return "unknown dtype" if self.pandas_dtype is None else str(self.pandas_dtype)

    @property
    def missing_sentinel(self) -> Any:
        return _MISSING_VALUES[self.missing_value or "nan"]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        _check_fields(data, _COLUMN_FIELDS, {"name", "kind", "dtype"}, "a column")
        values = {
            key: tuple(value) if isinstance(value, list) else value for key, value in data.items()
        }
        try:
            return cls(**values)
        except TypeError as exc:  # e.g. unhashable categories
            raise ValueError(f"Invalid column {data.get('name')!r}: {exc}") from exc


_OPTIONAL_TEXT = (str, type(None))
_OPTIONAL_FLAG = (bool, type(None))
_OPTIONAL_LIST = (list, type(None))
_OPTIONAL_NUMBER = (int, float, type(None))
# Each field a reader accepts, with the JSON types it may hold.
_COLUMN_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str, int),
    "kind": (str,),
    "dtype": _OPTIONAL_TEXT,
    "has_missing": _OPTIONAL_FLAG,
    "missing_handled": (bool,),
    "missing_value": _OPTIONAL_TEXT,
    "categories": _OPTIONAL_LIST,
    "categories_truncated": (bool,),
    "closed_categories": _OPTIONAL_LIST,
    "dtype_categories": _OPTIONAL_LIST,
    "ordered": (bool,),
    "minimum": _OPTIONAL_NUMBER,
    "maximum": _OPTIONAL_NUMBER,
}
_ARRAY_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "shape": (list,),
    "dtype": _OPTIONAL_TEXT,
    "value_kind": (str,),
    "has_missing": _OPTIONAL_FLAG,
    "missing_handled": (bool,),
}
_TABULAR_FIELDS: dict[str, tuple[type, ...]] = {"kind": (str,), "columns": (list,)}
_MULTI_FIELDS: dict[str, tuple[type, ...]] = {"kind": (str,), "inputs": (dict,)}


def _jsonable(value: Any) -> Any:
    return [_json_scalar(item) for item in value] if isinstance(value, tuple) else value


def _check_fields(
    data: Any, types: Mapping[str, tuple[type, ...]], required: Iterable[str], what: str
) -> None:
    """Refuse a dict with unknown or missing keys, or values of the wrong JSON type."""
    if not isinstance(data, Mapping):
        raise ValueError(f"Expected {what} as a JSON object, got {_type_name(data)}.")
    unknown = sorted(map(str, set(data) - set(types)))
    missing = sorted(set(required) - set(data))
    wrong = sorted(
        key for key, value in data.items() if key in types and not isinstance(value, types[key])
    )
    if unknown:
        raise ValueError(f"Unknown keys in {what}: {', '.join(unknown)}.")
    if missing:
        raise ValueError(f"Missing keys in {what}: {', '.join(missing)}.")
    if wrong:
        shown = ", ".join(f"{key}={data[key]!r}" for key in wrong)
        raise ValueError(f"Values of the wrong type in {what}: {shown}.")


# --------------------------------------------------------------------------- raw values


@dataclass(frozen=True)
class _Values:
    """One column (or an array's flattened values) split into values and a missing mask."""

    family: str  # `_dtype_family` of the raw dtype
    dtype: str  # the raw dtype, for messages
    data: Any  # numpy values (numeric families), a Series (datetime) or an object array
    mask: np.ndarray  # True where missing
    original: Any  # the raw Series, returned as is for kind "any"


_PLACEHOLDERS = {"float": np.nan, "integer": 0, "bool": False}


def _values_from_series(series: pd.Series, dtype: str | None = None) -> _Values:
    family = _dtype_family(series.dtype)
    mask = series.isna().to_numpy(dtype=bool)
    if family in _PLACEHOLDERS:
        data = series.to_numpy(dtype=_numpy_dtype(series.dtype), na_value=_PLACEHOLDERS[family])
    elif family == "datetime":
        data = _pandas_datetimes(series)
    else:
        data = series.to_numpy(dtype=object, na_value=None)
    return _Values(family, dtype or str(series.dtype), data, mask, series)


def _values_from_array(array: np.ndarray) -> _Values:
    return _values_from_series(pd.Series(array.reshape(-1), copy=False), str(array.dtype))


def _pandas_datetimes(series: pd.Series) -> pd.Series:
    """pyarrow timestamps as pandas datetimes, so one code path handles both."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return series.astype(series.dtype.pyarrow_dtype.to_pandas_dtype())
    return series


def _all_missing(values: _Values) -> _Values:
    """Values that are all missing, as an object column (their raw dtype tells nothing)."""
    data = np.full(len(values.mask), None, dtype=object)
    return _Values("object", values.dtype, data, values.mask, values.original)


# --------------------------------------------------------------------------- converters


@dataclass(frozen=True)
class _Converted:
    data: Any  # values in the training dtype (numpy where possible); None when refused
    mask: np.ndarray
    problems: list[_Problem] = field(default_factory=list)


_KIND_NOUNS = {
    "float": ("a number", "numbers"),
    "integer": ("an integer", "integers"),
    "bool": ("a boolean", "booleans"),
    "string": ("a string", "strings"),
    "categorical": ("a category", "categories"),
    "datetime": ("an ISO-8601 datetime", "datetimes"),
    "any": ("a value", "values"),
}
_KIND_REMEDIES = {
    "float": "Send numbers (numeric strings such as '3.5' are converted) and null for missing.",
    "integer": "Send integers (numeric strings such as '3' are converted) and null for missing.",
    "bool": "Send true/false values and null for missing.",
    "string": "Send this column as text and null for missing.",
    "datetime": "Send datetimes or ISO-8601 strings such as '2024-05-01T12:00:00'.",
}


def _expected(spec: ColumnSpec) -> str:
    return f"{_KIND_NOUNS[spec.kind][1]} ({spec.dtype_label})"


def _wrong_kind(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    """Refuse a whole column of the wrong kind, unless it holds nothing but missing values."""
    if values.mask.all():
        return _CONVERTERS[spec.kind](_all_missing(values), spec, where)
    text = (
        f"{where.subject} expects {_expected(spec)}, but got {values.dtype} values.\n"
        f"{_KIND_REMEDIES[spec.kind]}"
    )
    return _Converted(None, values.mask, [where.problem(text)])


def _offenders(
    where: _Where, bad: np.ndarray, data: Any, *, expected: str, nouns: tuple[str, str], remedy: str
) -> _Problem:
    """A refusal listing the first offending values with their positions."""
    positions = np.flatnonzero(bad)
    count, total = len(positions), bad.size
    shown = [f"{where.locate(int(i))}: {_show(data[i])}" for i in positions[:MAX_LISTED]]
    verb, noun = ("is not", nouns[0]) if count == 1 else ("are not", nouns[1])
    text = (
        f"{where.subject} expects {expected}, but {count:,} of {_plural(total, 'value')} "
        f"{verb} {noun}:\n{_capped(shown, count)}\n{remedy}"
    )
    return where.problem(text)


def _types_match(data: np.ndarray, types: tuple[type, ...]) -> np.ndarray:
    return np.fromiter((isinstance(value, types) for value in data), dtype=bool, count=len(data))


def _as_numbers(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    """Numeric values: numbers as they are, numeric text parsed (all of it, or refused)."""
    if values.family in _PLACEHOLDERS:
        mask = values.mask | _isnan(values.data)
        return _Converted(values.data, mask)
    if values.family == "datetime":
        return _wrong_kind(values, spec, where)
    return _parse_numbers(values, spec, where)


def _isnan(data: np.ndarray) -> np.ndarray:
    return np.isnan(data) if data.dtype.kind == "f" else np.zeros(len(data), dtype=bool)


def _parse_numbers(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    data, present = values.data, ~values.mask
    typed = (
        np.ones(len(data), bool) if values.family == "string" else _types_match(data, _NUMBER_TYPES)
    )
    candidates = present & typed
    try:
        parsed = np.asarray(pd.to_numeric(data[candidates], errors="coerce"))
        if parsed.dtype == object:
            parsed = parsed.astype(np.float64)
    except (TypeError, ValueError, OverflowError, decimal.InvalidOperation):
        parsed = np.full(int(candidates.sum()), np.nan)
    bad = present & ~typed
    bad[candidates] = _isnan(parsed)
    if bad.any():
        problem = _offenders(
            where,
            bad,
            data,
            expected=_expected(spec),
            nouns=("a number", "numbers"),
            remedy=_KIND_REMEDIES["float"],
        )
        return _Converted(None, values.mask, [problem])
    numbers = np.full(len(data), _PLACEHOLDERS.get(_dtype_family(parsed.dtype), 0), parsed.dtype)
    numbers[candidates] = parsed
    return _Converted(numbers, values.mask.copy())


def _to_float(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    numbers = _as_numbers(values, spec, where)
    if numbers.data is None:
        return numbers
    target = _numpy_dtype(spec.pandas_dtype)
    problem = _float_range_problem(numbers.data, numbers.mask, target, where)
    if problem is not None:
        return _Converted(None, numbers.mask, [problem])
    data = numbers.data.astype(target)
    data[numbers.mask] = np.nan
    return _Converted(data, numbers.mask)


def _float_range_problem(
    numbers: np.ndarray, mask: np.ndarray, target: np.dtype, where: _Where
) -> _Problem | None:
    """Refuse finite values that would become inf in a narrower float."""
    if target.itemsize >= 8:
        return None
    limit = float(np.finfo(target).max)
    wide = numbers.astype(np.float64, copy=False)
    bad = ~mask & np.isfinite(wide) & (np.abs(wide) > limit)
    if not bad.any():
        return None
    return _offenders(
        where,
        bad,
        numbers,
        expected=f"values within {target}'s finite range (±{limit:.6g})",
        nouns=("within range", "within range"),
        remedy=f"The training dtype is {target}, where these would become inf. "
        "Scale or clip them before predicting.",
    )


def _to_integer(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    numbers = _as_numbers(values, spec, where)
    if numbers.data is None:
        return numbers
    target = _numpy_dtype(spec.pandas_dtype)
    problems = [
        problem
        for check in (_fraction_problem, _int_range_problem)
        if (problem := check(numbers.data, numbers.mask, target, where)) is not None
    ]
    if problems:
        return _Converted(None, numbers.mask, problems)
    data = np.where(numbers.mask, 0, numbers.data).astype(target)
    return _Converted(data, numbers.mask)


def _fraction_problem(
    numbers: np.ndarray, mask: np.ndarray, target: np.dtype, where: _Where
) -> _Problem | None:
    if numbers.dtype.kind != "f":
        return None
    bad = ~mask & ~(np.isfinite(numbers) & (numbers == np.floor(numbers)))
    if not bad.any():
        return None
    return _offenders(
        where,
        bad,
        numbers,
        expected=f"whole numbers ({target})",
        nouns=("a whole number", "whole numbers"),
        remedy="Round them first if that is what you mean; the bundle does not round for you.",
    )


def _int_range_problem(
    numbers: np.ndarray, mask: np.ndarray, target: np.dtype, where: _Where
) -> _Problem | None:
    if numbers.dtype.kind == "b":
        return None  # 0 and 1 fit every integer dtype
    info = np.iinfo(target)
    if numbers.dtype.kind == "f":
        # info.min and info.max + 1 are powers of two, so exact as floats; info.max is not.
        outside = (numbers < float(info.min)) | (numbers >= float(info.max + 1))
    else:
        outside = (numbers < info.min) | (numbers > info.max)
    bad = ~mask & outside
    if not bad.any():
        return None
    return _offenders(
        where,
        bad,
        numbers,
        expected=f"values that fit {target} ({info.min:,} to {info.max:,})",
        nouns=("in range", "in range"),
        remedy=f"The training dtype is {target}; fix these values before predicting.",
    )


def _mistyped(
    values: _Values, spec: ColumnSpec, where: _Where, types: tuple[type, ...], kind: str
) -> _Problem | None:
    """The problem listing non-missing values that are not of `types`, or None."""
    bad = ~values.mask & ~_types_match(values.data, types)
    if not bad.any():
        return None
    return _offenders(
        where,
        bad,
        values.data,
        expected=_expected(spec),
        nouns=_KIND_NOUNS[kind],
        remedy=_KIND_REMEDIES[kind],
    )


def _to_bool(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    if values.family == "bool":
        return _Converted(values.data, values.mask)
    if values.family not in ("object", "string", "categorical"):
        return _wrong_kind(values, spec, where)
    problem = _mistyped(values, spec, where, (bool, np.bool_), "bool")
    if problem is not None:
        return _Converted(None, values.mask, [problem])
    data = np.where(values.mask, False, values.data).astype(bool)
    return _Converted(data, values.mask)


def _to_string(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    if values.family not in ("object", "string", "categorical"):
        return _wrong_kind(values, spec, where)
    if values.family == "string":  # a text dtype holds nothing but str
        return _Converted(values.data, values.mask)
    problem = _mistyped(values, spec, where, (str,), "string")
    if problem is not None:
        return _Converted(None, values.mask, [problem])
    return _Converted(values.data, values.mask)


def _to_categorical(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    # Unseen values are refused by `_unseen_problem`, as for any column with known values.
    data = values.original.to_numpy(dtype=object, na_value=None)
    return _Converted(data, values.mask)


def _to_datetime(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    if values.family == "datetime":
        return _retime(values.data, values.mask, spec, where)
    if values.family not in ("object", "string"):
        return _wrong_kind(values, spec, where)
    bad = ~values.mask & ~_types_match(values.data, _DATETIME_TYPES)
    parsed = None
    if not bad.any():
        try:
            parsed = pd.to_datetime(pd.Series(values.data), format="ISO8601", errors="coerce")
            bad = ~values.mask & parsed.isna().to_numpy()
        except (TypeError, ValueError, OverflowError) as exc:
            reason = str(exc).splitlines()[0]
            remedy = (
                "Send them all in one timezone, e.g. UTC with a 'Z' suffix."
                if "timezone" in reason
                else _KIND_REMEDIES["datetime"]
            )
            text = (
                f"{where.subject} expects {_expected(spec)}, but its values could not be read "
                f"as datetimes: {reason}\n{remedy}"
            )
            return _Converted(None, values.mask, [where.problem(text)])
    if bad.any():
        problem = _offenders(
            where,
            bad,
            values.data,
            expected=_expected(spec),
            nouns=_KIND_NOUNS["datetime"],
            remedy=_KIND_REMEDIES["datetime"],
        )
        return _Converted(None, values.mask, [problem])
    return _retime(parsed, values.mask, spec, where)


def _retime(parsed: pd.Series, mask: np.ndarray, spec: ColumnSpec, where: _Where) -> _Converted:
    """Datetimes in the training dtype: same instants, same timezone-awareness, same precision."""
    target = spec.pandas_dtype
    if mask.all():  # nothing to convert; and all-missing input carries no timezone
        return _Converted(pd.Series([None] * len(mask), dtype=target), mask)
    source_tz, target_tz = _timezone(parsed.dtype), _timezone(target)
    if (source_tz is None) != (target_tz is None):
        got = "naive datetimes" if source_tz is None else f"timezone-aware datetimes ({source_tz})"
        remedy = (
            f"Localize them first, e.g. s.dt.tz_localize({str(target_tz)!r})."
            if source_tz is None
            else "Convert them to the timezone training used and drop it, e.g. "
            "s.dt.tz_convert('UTC').dt.tz_localize(None)."
        )
        text = f"{where.subject} expects {_expected(spec)}, but got {got}.\n{remedy}"
        return _Converted(None, mask, [where.problem(text)])
    if target_tz is not None:
        parsed = parsed.dt.tz_convert(target_tz)
    try:
        converted = parsed.astype(target)
        lost = ~mask & (converted.astype(parsed.dtype) != parsed).to_numpy(dtype=bool)
    except (TypeError, ValueError, OverflowError):
        converted, lost = None, ~mask
    if lost.any():
        problem = _offenders(
            where,
            lost,
            parsed.to_numpy(dtype=object),
            expected=_expected(spec),
            nouns=(f"representable in {target}", f"representable in {target}"),
            remedy="They are out of range or more precise than the training dtype; "
            "round or fix them first.",
        )
        return _Converted(None, mask, [problem])
    return _Converted(converted, mask)


def _keep(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    return _Converted(values.original, values.mask)


_CONVERTERS: dict[str, Callable[[_Values, ColumnSpec, _Where], _Converted]] = {
    "float": _to_float,
    "integer": _to_integer,
    "bool": _to_bool,
    "string": _to_string,
    "categorical": _to_categorical,
    "datetime": _to_datetime,
    "any": _keep,
}


def _convert(values: _Values, spec: ColumnSpec, where: _Where) -> _Converted:
    """Values in the training dtype, or every problem found with them."""
    converted = _CONVERTERS[spec.kind](values, spec, where)
    problems = list(converted.problems)
    problems += _missing_problems(converted.mask, spec, where)
    if converted.data is not None:
        problems += _unseen_problems(converted.data, converted.mask, spec, where)
    return _Converted(None if problems else converted.data, converted.mask, problems)


def _missing_problems(mask: np.ndarray, spec: ColumnSpec, where: _Where) -> list[_Problem]:
    if spec.allows_missing or not mask.any():
        return []
    flagged = np.flatnonzero(where.per_unit(mask))
    total = where.shape[0] if where.shape else 1
    first = ", ".join(str(i) for i in flagged[:MAX_LISTED]) + (
        ", ..." if len(flagged) > MAX_LISTED else ""
    )
    unit = where.unit
    at = f"{unit}s" if len(flagged) > 1 else unit
    text = (
        f"{where.subject} has missing values (NaN/None) in {len(flagged):,} of "
        f"{_plural(total, unit)} ({at} {first}), but the training example had none "
        f"and no preprocessing step imputes them.\nFill or drop these {unit}s before predicting."
    )
    return [where.problem(text)]


def _unseen_problems(
    data: Any, mask: np.ndarray, spec: ColumnSpec, where: _Where
) -> list[_Problem]:
    """Refuse values the column's encoder (or categorical dtype) has never seen."""
    known = spec.known_values
    if known is None:
        return []
    present = np.asarray(data, dtype=object)[~mask]
    unseen = present[~_isin(present, known)]
    if not len(unseen):
        return []
    counts = _counts(unseen)
    shown = [f"{text}  ({_plural(count, 'row')})" for text, count in counts.items()]
    reason, remedy = (
        (
            "which its encoder refuses",
            "Map these to a known value, or refit the encoder with handle_unknown='ignore'.",
        )
        if spec.closed_categories is not None
        else (
            f"which its training dtype ({spec.dtype_label}) cannot hold",
            "Map these to a known value.",
        )
    )
    examples = ", ".join(_show(value) for value in _sorted(known)[:MAX_LISTED])
    more = ", ..." if len(known) > MAX_LISTED else ""
    text = (
        f"{where.subject} has {_plural(len(counts), 'value')} never seen at training, {reason}:\n"
        f"{_capped(shown, len(counts))}\n"
        f"Known values ({len(known):,}): {examples}{more}\n{remedy}"
    )
    return [where.problem(text)]


def _isin(values: np.ndarray, known: Sequence[Any]) -> np.ndarray:
    """Which values are among `known` (matched as `_categorical_series` encodes them)."""
    # Lists, dicts and arrays are never categories, and would trip pandas' hashing.
    scalar = np.fromiter(map(pdt.is_scalar, values), dtype=bool, count=len(values))
    found = np.zeros(len(values), dtype=bool)
    index = pd.Index(list(known))
    try:
        found[scalar] = index.get_indexer(values[scalar]) != -1
    except (TypeError, ValueError):
        found[scalar] = [_contains(index, value) for value in values[scalar]]
    return found


def _contains(index: pd.Index, value: Any) -> bool:
    try:
        return value in index
    except (TypeError, ValueError):
        return False


def _counts(values: np.ndarray) -> dict[str, int]:
    """{shown value: occurrences}, in value order."""
    try:
        counts = pd.Series(values, dtype=object).value_counts(sort=False)
        pairs = [(value, int(count)) for value, count in counts.items()]
    except (TypeError, ValueError):  # unhashable values: count them by their text
        pairs = list(Counter(_show(value) for value in values).items())
        return dict(sorted(pairs))
    return {_show(value): count for value, count in _sorted(pairs, key=lambda pair: pair[0])}


# --------------------------------------------------------------------------- restore


def _numeric_series(converted: _Converted, spec: ColumnSpec) -> pd.Series:
    series = pd.Series(converted.data)
    if series.dtype != spec.pandas_dtype:
        series = series.astype(spec.pandas_dtype)
    # Series.mask gives NA for nullable dtypes and, as pandas does when reading, float64
    # with NaN for numpy ints and object for numpy bools.
    return series.mask(converted.mask) if converted.mask.any() else series


def _string_series(converted: _Converted, spec: ColumnSpec) -> pd.Series:
    data = np.array(converted.data, dtype=object)
    data[converted.mask] = spec.missing_sentinel
    return pd.Series(data, dtype=spec.pandas_dtype)


def _categorical_series(converted: _Converted, spec: ColumnSpec) -> pd.Series:
    dtype, present = spec.pandas_dtype, ~converted.mask
    codes = np.full(len(present), -1, dtype=np.int64)
    codes[present] = dtype.categories.get_indexer(np.asarray(converted.data, dtype=object)[present])
    return pd.Series(pd.Categorical.from_codes(codes, dtype=dtype))


def _original_series(converted: _Converted, spec: ColumnSpec) -> pd.Series:
    return converted.data.reset_index(drop=True)


_SERIES_BUILDERS: dict[str, Callable[[_Converted, ColumnSpec], pd.Series]] = {
    "float": _numeric_series,
    "integer": _numeric_series,
    "bool": _numeric_series,
    "string": _string_series,
    "categorical": _categorical_series,
    "datetime": _original_series,
    "any": _original_series,
}


def _array_values(converted: _Converted, spec: ColumnSpec) -> np.ndarray:
    """Converted array values in the training numpy dtype (NaN where allowed missing)."""
    data, mask = converted.data, converted.mask
    if isinstance(data, pd.Series):
        return data.to_numpy()
    if spec.kind == "string":
        return _string_array(data, mask, spec)
    if mask.any() and data.dtype.kind in "iub":
        # numpy ints and bools cannot hold NaN: widen them as numpy and pandas would.
        data = data.astype(np.float64 if data.dtype.kind in "iu" else object)
        data[mask] = np.nan
    return data


def _string_array(data: np.ndarray, mask: np.ndarray, spec: ColumnSpec) -> np.ndarray:
    if mask.any() or spec.pandas_dtype.kind == "O":
        data = np.array(data, dtype=object)
        data[mask] = np.nan
        return data
    return data.astype(str)  # numpy str arrays keep their own width


# --------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class _Checked:
    canonical: Any
    problems: list[_Problem]
    extra: list[str] = field(default_factory=list)


class InputSchema:
    """The input contract of a bundle: what training saw, and how raw input must look.

    Subclasses: `TabularSchema`, `ArraySchema`, `MultiInputSchema`.
    """

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The schema as a JSON-able dict (stored in ``manifest.json["input_schema"]``)."""
        raise NotImplementedError

    @staticmethod
    def from_dict(d: dict[str, Any]) -> InputSchema:
        """Read a schema written by `to_dict`.

        Raises:
            ValueError: unknown or missing keys, an unknown kind or dtype.
        """
        if not isinstance(d, Mapping) or "kind" not in d:
            raise ValueError("An input schema must be a JSON object with a 'kind' key.")
        reader = _SCHEMA_READERS.get(d["kind"])
        if reader is None:
            raise ValueError(
                f"Unknown input schema kind {d['kind']!r}; "
                f"known kinds: {', '.join(_SCHEMA_READERS)}."
            )
        return reader(d)

    def coerce(self, raw: Any, *, strict: bool = False) -> pd.DataFrame | np.ndarray | dict:
        """Turn raw input into the canonical form the preprocessing was fitted on.

        Args:
            raw: any accepted raw form (see the module docstring).
            strict: refuse DataFrame columns the bundle does not know, instead of dropping
                them with one `ExtraColumnsWarning`.

        Returns:
            A DataFrame (tabular), an ndarray (array) or a dict of those (multi).

        Raises:
            SchemaError: listing every problem found (``err.problems``).

        Example:
            >>> schema = infer_schema(pd.DataFrame({"age": [31, 45]}))
            >>> schema.coerce([{"age": 52}])["age"].dtype
            dtype('int64')
        """
        checked = self._check(raw, strict, "Input")
        if checked.problems:
            raise _schema_error(checked.problems)
        if checked.extra:
            warnings.warn(_extra_warning(checked.extra), stacklevel=2)
        return checked.canonical

    def problems(self, raw: Any, *, strict: bool = False) -> list[str]:
        """Every problem `coerce` would report, [] if none; never raises for bad input."""
        return [problem.text for problem in self._check(raw, strict, "Input").problems]

    def n_rows(self, canonical: Any) -> int:
        """The number of rows (samples) in a canonical input."""
        raise NotImplementedError

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        raise NotImplementedError


def _extra_warning(extra: Sequence[str]) -> ExtraColumnsWarning:
    message = (
        f"Ignoring {_plural(len(extra), 'input column')} the bundle does not know:\n"
        f"{_capped(_sorted(extra), len(extra))}\n"
        "Drop them to silence this warning, or pass strict=True to refuse them."
    )
    return ExtraColumnsWarning(message, extra=extra)


# --------------------------------------------------------------------------- tabular


_TABULAR_FORMS = (
    "a pandas DataFrame",
    "a list of dicts (JSON records)",
    "a dict of column -> list (columnar JSON)",
    "a dict of column -> value, or a pandas Series (one row)",
    "a 2-D numpy array or list of lists (columns by position, in training order)",
)


@dataclass(frozen=True)
class TabularSchema(InputSchema):
    """A DataFrame input: named columns, each with its kind and training dtype."""

    columns: tuple[ColumnSpec, ...]
    kind: ClassVar[str] = "tabular"

    def __post_init__(self) -> None:
        repeated = _sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"Column names must be unique; repeated: {', '.join(map(str, repeated))}."
            )

    @property
    def names(self) -> list[Any]:
        return [column.name for column in self.columns]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": [column.to_dict() for column in self.columns]}

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> TabularSchema:
        _check_fields(d, _TABULAR_FIELDS, _TABULAR_FIELDS, "a tabular schema")
        return cls(tuple(ColumnSpec.from_dict(column) for column in d["columns"]))

    def n_rows(self, canonical: pd.DataFrame) -> int:
        return len(canonical)

    def __str__(self) -> str:
        rows = [
            (str(c.name), c.kind, c.dtype or "?", _missing_label(c), _range_label(c))
            for c in self.columns
        ]
        header = ("column", "kind", "dtype", "missing", "range / categories")
        return (
            f"Tabular input: {_plural(len(self.columns), 'column')}, matched by name "
            f"(order does not matter)\n{_table(header, rows)}"
        )

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        if isinstance(raw, pd.DataFrame):
            canonical = self._already_canonical(raw)
            if canonical is not None:
                return _Checked(canonical, [])
        frame, problems = _read_frame(raw, self.names, subject)
        if frame is None:
            return _Checked(None, problems)
        problems, extra = _column_problems(frame, self.names, subject, strict)
        built, column_problems = self._convert_columns(frame, subject)
        problems += column_problems
        if problems:
            return _Checked(None, problems, extra)
        if all(built[name] is None for name in self.names):
            canonical = frame[self.names]  # already canonical; copy-on-write shares the data
        else:
            # Positional assembly: a raw index may repeat labels, which alignment cannot take.
            columns = {
                name: frame[name].reset_index(drop=True) if series is None else series
                for name, series in built.items()
            }
            canonical = pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))
            canonical.index = frame.index
        return _Checked(canonical, [], [str(name) for name in extra])

    @cached_property
    def _training_dtypes(self) -> list[Any]:
        return [column.pandas_dtype for column in self.columns]

    @cached_property
    def _guarded(self) -> list[tuple[ColumnSpec, frozenset[Any] | None]]:
        """Columns whose values need a look even when their dtype is the training one."""
        return [
            (column, None if column.known_values is None else frozenset(column.known_values))
            for column in self.columns
            if not column.allows_missing or column.known_values is not None
        ]

    def _already_canonical(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """`frame` (columns put in order) when it needs no conversion; else None.

        The fast path for the common case, a DataFrame with the training columns and dtypes:
        one dtype comparison per column, and a value check only for the columns that refuse
        missing values or unseen categories. Anything else (and every refusal) goes through
        the full path, so this never accepts what the full path would convert or refuse.
        """
        names = self.names
        if len(frame.columns) != len(names) or frame.columns.has_duplicates:
            return None
        if list(frame.columns) != names:
            if set(frame.columns) != set(names):
                return None
            frame = frame[names]
        for dtype, expected in zip(frame.dtypes.tolist(), self._training_dtypes, strict=True):
            if expected is not None and dtype != expected:
                return None
        for column, known in self._guarded:
            series = frame[column.name]
            missing = series.isna()
            if series.dtype == object and missing.any():
                return None  # missing sentinels may need normalizing: the full path does it
            if not column.allows_missing and missing.any():
                return None
            if known is not None and not _all_known(series[~missing].tolist(), known):
                return None
        return frame

    def _convert_columns(
        self, frame: pd.DataFrame, subject: str
    ) -> tuple[dict[Any, pd.Series | None], list[_Problem]]:
        """Each present column converted (None where it is canonical already), and problems."""
        suffix = "" if subject == "Input" else f" of {subject[0].lower()}{subject[1:]}"
        duplicated = set(frame.columns[frame.columns.duplicated()])
        built: dict[Any, pd.Series | None] = {}
        problems: list[_Problem] = []
        for spec in self.columns:
            if spec.name not in frame.columns or spec.name in duplicated:
                continue
            raw = frame[spec.name]
            where = _Where(f"Column {spec.name!r}{suffix}", str(spec.name), (len(frame),))
            converted = _convert(_values_from_series(raw), spec, where)
            problems += converted.problems
            if not converted.problems:
                built[spec.name] = _built_series(raw, converted, spec)
        return built, problems


def _all_known(values: list[Any], known: frozenset[Any]) -> bool:
    try:
        return all(value in known for value in values)
    except TypeError:  # unhashable values: the full path reports them
        return False


def _built_series(raw: pd.Series, converted: _Converted, spec: ColumnSpec) -> pd.Series | None:
    """The canonical column, or None when the raw column is canonical already."""
    same_missing = raw.dtype != object or not converted.mask.any() or spec.kind == "any"
    if spec.pandas_dtype is None or (raw.dtype == spec.pandas_dtype and same_missing):
        return None
    return _SERIES_BUILDERS[spec.kind](converted, spec)


def _missing_label(column: ColumnSpec) -> str:
    if column.has_missing:
        return "yes"
    if column.missing_handled:
        return "imputed"
    return "unchecked" if column.has_missing is None else "no"


def _range_label(column: ColumnSpec) -> str:
    if column.minimum is not None:
        return f"{_fmt_number(column.minimum)} .. {_fmt_number(column.maximum)}"
    values = column.closed_categories or column.categories or column.dtype_categories
    if not values:
        return ""
    text = ", ".join(_show(value) for value in values[:MAX_LISTED])
    if len(values) > MAX_LISTED or column.categories_truncated:
        more = "over " if column.categories_truncated and not column.closed_categories else ""
        text += f" ... ({more}{len(values):,} in all)"
    return f"closed: {text}" if column.closed_categories is not None else text


def _column_problems(
    frame: pd.DataFrame, names: Sequence[Any], subject: str, strict: bool
) -> tuple[list[_Problem], list[Any]]:
    """Missing, duplicated and (with strict) unknown columns; and the unknown ones."""
    known = set(names)
    present = set(frame.columns)
    missing = [name for name in names if name not in present]
    extra = list(dict.fromkeys(column for column in frame.columns if column not in known))
    duplicated = _sorted(
        {column for column in frame.columns[frame.columns.duplicated()] if column in known}
    )
    problems = []
    if missing or (extra and strict):
        remedy = (
            "Rename or add these columns. Column order does not matter for a DataFrame."
            if missing
            else "Drop these columns, or call with strict=False to ignore them with a warning."
        )
        if missing and _unnamed(frame.columns):
            remedy += (
                "\nThe input's columns look unnamed (0, 1, ...): name them, or pass df.to_numpy()."
            )
        text = _name_mismatch(
            missing,
            extra,
            total=len(names),
            nouns=("column", "column"),
            subject=subject,
            remedy=remedy,
        )
        problems.append(_Problem(text, str(missing[0]) if missing else str(_sorted(extra)[0])))
    if duplicated:
        text = (
            f"{subject} has {_plural(len(duplicated), 'column name')} more than once:\n"
            f"{_capped([str(name) for name in duplicated], len(duplicated))}\n"
            "Give every column a unique name."
        )
        problems.append(_Problem(text, str(duplicated[0])))
    return problems, ([] if missing or strict else extra)


def _unnamed(columns: pd.Index) -> bool:
    return list(columns) == list(range(len(columns))) and len(columns) > 0


def _read_frame(
    raw: Any, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    """Any accepted tabular raw form as a DataFrame (not yet validated)."""
    reader = next((read for types, read in _FRAME_READERS if isinstance(raw, types)), None)
    if reader is None:
        return None, [_unsupported(raw, subject, _TABULAR_FORMS)]
    try:
        return reader(raw, names, subject)
    except (TypeError, ValueError, OverflowError) as exc:
        text = f"{subject} could not be read as a table: {str(exc).splitlines()[0]}"
        return None, [_Problem(text)]


def _frame_from_frame(
    raw: pd.DataFrame, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame, list]:
    return raw, []


def _frame_from_series(
    raw: pd.Series, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame, list]:
    return raw.to_frame().T.reset_index(drop=True), []


def _frame_from_array(
    raw: np.ndarray, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    rows = raw[np.newaxis] if raw.ndim == 1 and len(raw) == len(names) else raw
    if rows.ndim != 2 or rows.shape[1] != len(names):
        return None, [_width_problem(raw.shape, names, subject)]
    return pd.DataFrame(rows, columns=list(names)), []


def _frame_from_dict(
    raw: Mapping[Any, Any], names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    listlike = {key: _is_listlike(value) for key, value in raw.items()}
    if not any(listlike.values()):
        return pd.DataFrame({key: [value] for key, value in raw.items()}), []
    if not all(listlike.values()):
        lists = _sorted(str(key) for key, is_list in listlike.items() if is_list)
        scalars = _sorted(str(key) for key, is_list in listlike.items() if not is_list)
        text = (
            f"{subject} is a dict that mixes lists ({lists[0]!r}) and single values "
            f"({scalars[0]!r}).\nMap every column to a list of values (columns), or every "
            "column to one value (one row)."
        )
        return None, [_Problem(text, scalars[0])]
    columns = {key: _column_values(value) for key, value in raw.items()}
    lengths = {key: len(value) for key, value in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = [
            f"{key}: {length:,} values"
            for key, length in sorted(lengths.items(), key=lambda kv: str(kv[0]))
        ]
        text = (
            f"{subject} has columns of different lengths:\n{_capped(shown, len(shown))}\n"
            "Give every column one value per row (null for missing)."
        )
        return None, [_Problem(text)]
    return pd.DataFrame(columns), []


def _is_listlike(value: Any) -> bool:
    return isinstance(
        value, (list, tuple, np.ndarray, pd.Series, pd.Index, pd.api.extensions.ExtensionArray)
    )


def _column_values(value: Any) -> Any:
    """One column of a columnar dict, without a pandas index (so nothing realigns)."""
    if isinstance(value, (pd.Series, pd.Index)):
        return value.array
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise ValueError(f"a column must be 1-D, got an array of shape {value.shape}")
    return value


def _frame_from_list(
    raw: Sequence[Any], names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    if not raw:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in names}), []
    if all(isinstance(item, Mapping) for item in raw):
        return pd.DataFrame(list(raw)), []
    if all(_is_listlike(item) for item in raw):
        return _frame_from_rows(raw, names, subject)
    if not any(_is_listlike(item) or isinstance(item, Mapping) for item in raw):
        if len(raw) != len(names):
            return None, [_width_problem((len(raw),), names, subject)]
        return pd.DataFrame([list(raw)], columns=list(names)), []
    text = (
        f"{subject} is a list that mixes rows, records and single values.\n"
        "Send a list of rows (lists), a list of records (dicts), or one row."
    )
    return None, [_Problem(text)]


def _frame_from_rows(
    rows: Sequence[Any], names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    lengths = [len(row) for row in rows]
    if len(set(lengths)) == 1:
        if lengths[0] != len(names):
            return None, [_width_problem((len(rows), lengths[0]), names, subject)]
        return pd.DataFrame([list(row) for row in rows], columns=list(names)), []
    wrong = [i for i, length in enumerate(lengths) if length != len(names)]
    shown = [f"row {i}: {lengths[i]:,} values" for i in wrong[:MAX_LISTED]]
    text = (
        f"{subject} has {len(wrong):,} of {_plural(len(rows), 'row')} without "
        f"{len(names):,} values, one per column the bundle expects:\n{_capped(shown, len(wrong))}\n"
        "Rows are matched to the columns by position; give every row all columns."
    )
    return None, [_Problem(text)]


def _width_problem(shape: tuple[int, ...], names: Sequence[Any], subject: str) -> _Problem:
    """The wrong number of columns in positional (array or list) input."""
    width = len(names)
    got = (
        f"{shape[-1]:,} columns instead of {width:,}"
        if len(shape) == 2
        else f"a table of {width:,} columns"
    )
    expected = _fmt_shape((None, width))
    text = f"{subject} has shape {_fmt_shape(shape)}, but the bundle expects {expected}: {got}."
    if width == 1 and len(shape) == 1:
        text += f"\nFor {_plural(shape[0], 'row')} of one column, use np.reshape(x, (-1, 1))."
    else:
        text += (
            "\nArray input is matched to the columns by position, in training order:\n"
            f"{_capped([str(name) for name in names], width)}\n"
            f"Pass all {width:,} columns in that order, or a DataFrame with named columns."
        )
    return _Problem(text, "axis 1")


_FRAME_READERS: tuple[tuple[type | tuple[type, ...], Callable[..., Any]], ...] = (
    (pd.DataFrame, _frame_from_frame),
    (pd.Series, _frame_from_series),
    (np.ndarray, _frame_from_array),
    (Mapping, _frame_from_dict),
    ((list, tuple), _frame_from_list),
)


# --------------------------------------------------------------------------- array


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
    """

    shape: tuple[int | None, ...]
    dtype: str | None = None
    value_kind: str = "any"
    has_missing: bool | None = None
    missing_handled: bool = False
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
        if array.dtype.kind == "f" and not self._spec.allows_missing:
            return not np.isnan(array).any()
        return array.dtype.kind in "biuf"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "value_kind": self.value_kind,
            "has_missing": self.has_missing,
            "missing_handled": self.missing_handled,
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


# --------------------------------------------------------------------------- multi


@dataclass(frozen=True)
class MultiInputSchema(InputSchema):
    """A model with several inputs: one schema per model input name."""

    inputs: dict[str, InputSchema]
    kind: ClassVar[str] = "multi"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": {name: s.to_dict() for name, s in self.inputs.items()}}

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> MultiInputSchema:
        _check_fields(d, _MULTI_FIELDS, _MULTI_FIELDS, "a multi-input schema")
        inputs = {name: InputSchema.from_dict(sub) for name, sub in d["inputs"].items()}
        if any(isinstance(sub, MultiInputSchema) for sub in inputs.values()):
            raise ValueError("A multi-input schema cannot nest another multi-input schema.")
        return cls(inputs)

    def n_rows(self, canonical: Mapping[str, Any]) -> int:
        return next((self.inputs[name].n_rows(part) for name, part in canonical.items()), 0)

    def __str__(self) -> str:
        parts = [
            f"input {name!r}: " + str(schema).replace("\n", "\n  ")
            for name, schema in self.inputs.items()
        ]
        header = f"Multi-input: {_plural(len(self.inputs), 'input')}, as a dict keyed by input name"
        return "\n\n".join([header, *parts])

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        if not isinstance(raw, Mapping):
            forms = [
                f"a dict keyed by the model's input names: {', '.join(map(repr, self.inputs))}"
            ]
            return _Checked(None, [_unsupported(raw, subject, forms)])
        problems = _key_problems(raw, list(self.inputs), subject)
        checked = {
            name: schema._check(raw[name], strict, f"Input {name!r}")
            for name, schema in self.inputs.items()
            if name in raw
        }
        problems += [problem for part in checked.values() for problem in part.problems]
        extra = [f"{name}.{column}" for name, part in checked.items() for column in part.extra]
        if problems:
            return _Checked(None, problems, extra)
        canonical = {name: part.canonical for name, part in checked.items()}
        return _Checked(canonical, _row_count_problems(canonical, self.inputs), extra)


def _key_problems(raw: Mapping[str, Any], names: Sequence[str], subject: str) -> list[_Problem]:
    missing = [name for name in names if name not in raw]
    extra = [key for key in raw if key not in set(names)]
    if not missing and not extra:
        return []
    remedy = f"Pass a dict keyed by the model's input names: {', '.join(map(str, names))}."
    text = _name_mismatch(
        missing, extra, total=len(names), nouns=("input", "key"), subject=subject, remedy=remedy
    )
    return [_Problem(text, str(missing[0]) if missing else str(_sorted(extra)[0]))]


def _row_count_problems(
    canonical: Mapping[str, Any], inputs: Mapping[str, InputSchema]
) -> list[_Problem]:
    rows = {name: inputs[name].n_rows(part) for name, part in canonical.items()}
    if len(set(rows.values())) <= 1:
        return []
    shown = [f"{name}: {_plural(count, 'row')}" for name, count in rows.items()]
    text = (
        f"The model's inputs have different numbers of rows:\n{_capped(shown, len(shown))}\n"
        "Pass the same samples, in the same order, to every input."
    )
    return [_Problem(text)]


_SCHEMA_READERS: dict[str, Callable[[Mapping[str, Any]], InputSchema]] = {
    "tabular": TabularSchema._read,
    "array": ArraySchema._read,
    "multi": MultiInputSchema._read,
}


# --------------------------------------------------------------------------- inference


def infer_schema(
    example: Any,
    *,
    missing_handled: Iterable[str] = (),
    closed_categories: Mapping[Any, Sequence[Any]] | None = None,
    input_names: Sequence[str] | None = None,
) -> InputSchema:
    """Infer the input contract from an input example.

    Args:
        example: a DataFrame, an ndarray (with the batch axis), or a dict of those keyed by
            model input name (a list or tuple works too, with `input_names`).
        missing_handled: columns whose NaN a preprocessing step imputes: NaN passes there
            even if the example had none. For array input only the key "*" (or, in a
            multi-input example, the input's name) counts; other names are ignored, since
            fitted steps call array columns "0", "1", ...
        closed_categories: ``{column: categories}`` for columns whose encoder fails on
            unseen values (``handle_unknown='error'``); unseen values are refused. A missing
            value among the categories means the encoder accepts missing values too.
        input_names: the model's input names, to name a multi-input example (or check one).

    Returns:
        A `TabularSchema`, `ArraySchema` or `MultiInputSchema`.

    Raises:
        TypeError: the example is not a DataFrame, ndarray or dict of those.
        ValueError: the example has no batch axis or duplicate column names, or a name in
            `input_names` (or, for a DataFrame, in `missing_handled`/`closed_categories`)
            does not match it.

    Example:
        >>> str(infer_schema(np.zeros((2, 3), np.float32)).to_dict()["shape"])
        '[3]'
    """
    # Fitted steps name columns by str(name), so hints match column names as text.
    handled = frozenset(map(str, missing_handled))
    closed = {str(name): values for name, values in (closed_categories or {}).items()}
    schema = _infer(_named_example(example, input_names), handled, closed)
    if isinstance(schema, TabularSchema):
        _check_hint_names({str(name) for name in schema.names}, handled, closed)
    return schema


def _named_example(example: Any, input_names: Sequence[str] | None) -> Any:
    if input_names is None:
        return example
    names = list(input_names)
    if isinstance(example, (list, tuple)):
        if len(example) != len(names):
            raise ValueError(
                f"The example has {len(example)} inputs, but input_names has {len(names)}."
            )
        return dict(zip(names, example, strict=True))
    if isinstance(example, Mapping):
        if set(example) != set(names):
            raise ValueError(
                f"The example's keys {_sorted(example)} are not the model's input names "
                f"{_sorted(names)}."
            )
        return {name: example[name] for name in names}
    if len(names) != 1:
        raise ValueError(
            f"The model has {len(names)} inputs; pass the example as a dict keyed by name."
        )
    return example


def _infer(
    example: Any, handled: frozenset[str], closed: Mapping[str, Sequence[Any]]
) -> InputSchema:
    infer = next((fn for types, fn in _INFERERS if isinstance(example, types)), None)
    if infer is None:
        raise TypeError(
            f"Cannot infer an input schema from {_type_name(example)}; pass a pandas DataFrame, "
            "a numpy array, or a dict of those keyed by model input name (np.asarray(x) for lists)."
        )
    return infer(example, handled, closed)


def _infer_tabular(
    frame: pd.DataFrame, handled: frozenset[str], closed: Mapping[str, Sequence[Any]]
) -> TabularSchema:
    duplicated = _sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise ValueError(
            f"The example has duplicate column names: {', '.join(map(str, duplicated))}."
        )
    odd = [
        name for name in frame.columns if not isinstance(name, (str, int)) or isinstance(name, bool)
    ]
    if odd:
        raise ValueError(
            f"Column names must be strings, got {odd[0]!r}; use df.columns.astype(str)."
        )
    return TabularSchema(
        tuple(
            _infer_column(frame.iloc[:, i], str(name) in handled, closed.get(str(name)))
            for i, name in enumerate(frame.columns)
        )
    )


def _infer_column(series: pd.Series, handled: bool, closed: Sequence[Any] | None) -> ColumnSpec:
    kind = _column_kind(series)
    categories, truncated = _seen_categories(series, kind)
    known, closed_has_missing = _split_missing(closed)
    is_categorical = kind == "categorical"
    minimum, maximum = _numeric_range(series, kind)
    return ColumnSpec(
        name=series.name,
        kind=kind,
        dtype=_encode_dtype(series.dtype),
        has_missing=bool(series.isna().any()),
        missing_handled=handled or closed_has_missing,
        missing_value=_missing_value(series) if series.dtype == object else None,
        categories=categories,
        categories_truncated=truncated,
        closed_categories=known,
        dtype_categories=tuple(map(_json_scalar, series.cat.categories))
        if is_categorical
        else None,
        ordered=bool(series.cat.ordered) if is_categorical else False,
        minimum=minimum,
        maximum=maximum,
    )


def _column_kind(series: pd.Series) -> str:
    family = _dtype_family(series.dtype)
    if family != "object":
        return family
    return "string" if pdt.infer_dtype(series, skipna=True) == "string" else "any"


def _seen_categories(series: pd.Series, kind: str) -> tuple[tuple[Any, ...] | None, bool]:
    if kind not in ("string", "categorical"):
        return None, False
    seen = _sorted(pd.unique(series.dropna().to_numpy(dtype=object)))
    return tuple(map(_json_scalar, seen[:MAX_CATEGORIES])), len(seen) > MAX_CATEGORIES


def _split_missing(closed: Sequence[Any] | None) -> tuple[tuple[Any, ...] | None, bool]:
    """Closed categories without missing values, and whether there was one."""
    if closed is None:
        return None, False
    known = [value for value in closed if not _is_missing(value)]
    return tuple(dict.fromkeys(map(_json_scalar, known))), len(known) < len(closed)


def _numeric_range(series: pd.Series, kind: str) -> tuple[Any, Any]:
    if kind not in ("float", "integer"):
        return None, None
    values = series.dropna().to_numpy(dtype=_numpy_dtype(series.dtype))
    if kind == "float":
        values = values[np.isfinite(values)]
    if not values.size:
        return None, None
    return _json_scalar(values.min()), _json_scalar(values.max())


def _missing_value(series: pd.Series) -> str:
    """The missing value an object column used: "none" if only None, else "nan"."""
    missing = series[series.isna()]
    return "none" if len(missing) and all(value is None for value in missing) else "nan"


def _infer_array(
    array: np.ndarray, handled: frozenset[str], closed: Mapping[str, Sequence[Any]]
) -> ArraySchema:
    return _array_schema(array, ALL_ARRAYS in handled)


def _array_schema(array: np.ndarray, handled: bool) -> ArraySchema:
    if array.ndim == 0:
        raise ValueError("The example must have a batch axis; got a 0-d array.")
    family = _dtype_family(array.dtype)
    if family == "object":
        values = pd.Series(array.reshape(-1), dtype=object)
        family = "string" if pdt.infer_dtype(values, skipna=True) == "string" else "any"
    return ArraySchema(
        shape=tuple(int(dim) for dim in array.shape[1:]),
        dtype=str(array.dtype),
        value_kind=family if family in KINDS and family != "categorical" else "any",
        has_missing=bool(pd.isna(array).any()),
        missing_handled=handled,
    )


def _infer_multi(
    example: Mapping[str, Any], handled: frozenset[str], closed: Mapping[str, Sequence[Any]]
) -> MultiInputSchema:
    inputs: dict[str, InputSchema] = {}
    for name, part in example.items():
        if not isinstance(name, str):
            raise ValueError(f"Model input names must be strings, got {name!r}.")
        if isinstance(part, np.ndarray):
            inputs[name] = _array_schema(part, bool({name, ALL_ARRAYS} & handled))
        elif isinstance(part, pd.DataFrame):
            inputs[name] = _infer_tabular(part, handled, closed)
        else:
            raise TypeError(
                f"Input {name!r} of the example is {_type_name(part)}; pass a DataFrame or ndarray."
            )
    return MultiInputSchema(inputs)


_INFERERS: tuple[tuple[type, Callable[..., InputSchema]], ...] = (
    (pd.DataFrame, _infer_tabular),
    (np.ndarray, _infer_array),
    (Mapping, _infer_multi),
)


def _check_hint_names(columns: set[str], handled: Iterable[str], closed: Mapping[str, Any]) -> None:
    """Refuse hints about columns the example does not have: they describe another input."""
    for argument, names in (("missing_handled", handled), ("closed_categories", closed)):
        unknown = _sorted(set(names) - columns)
        if unknown:
            raise ValueError(
                f"{argument} names {_plural(len(unknown), 'column')} not in the example:\n"
                f"{bullet_list(unknown)}\nThe example's columns: {', '.join(_sorted(columns))}."
            )


# --------------------------------------------------------------------------- hints


def schema_from_hints(
    *,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
    categories: Mapping[str, Sequence[Any]] | None = None,
    model_inputs: Mapping[str, tuple[Sequence[int | None], str]] | None = None,
    missing_handled: Iterable[str] = (),
    closed_categories: Mapping[str, Sequence[Any]] | None = None,
) -> InputSchema | None:
    """The input contract when there is no input example, from what fitted objects know.

    Precedence: `feature_names` (a fitted step's ``feature_names_in_``) gives a tabular
    schema; else `n_features` (``n_features_in_``) an array of shape ``(None, n)``; else
    `model_inputs` (only meaningful without preprocessing) an array or multi-input schema.
    Kinds and dtypes that cannot be known are "any" (accepted as given) and missing values
    are not checked, except where `closed_categories` refuses unseen values.

    Args:
        feature_names: column names, in order.
        n_features: the number of features of array input.
        categories: ``{column: categories}`` from fitted encoders (``categories_``).
        model_inputs: ``{input name: (shape without batch axis, dtype string)}``.
        missing_handled: as for `infer_schema`.
        closed_categories: as for `infer_schema`.

    Returns:
        The schema, or None when no hint was given.
    """
    handled = frozenset(missing_handled)
    if feature_names is not None:
        cats, closed = dict(categories or {}), dict(closed_categories or {})
        return TabularSchema(
            tuple(
                _hinted_column(name, cats.get(name), closed.get(name), name in handled)
                for name in feature_names
            )
        )
    if n_features is not None:
        return ArraySchema(shape=(int(n_features),), missing_handled=ALL_ARRAYS in handled)
    if model_inputs:
        schemas = {
            name: _hinted_array(shape, dtype, bool({name, ALL_ARRAYS} & handled))
            for name, (shape, dtype) in model_inputs.items()
        }
        return next(iter(schemas.values())) if len(schemas) == 1 else MultiInputSchema(schemas)
    return None


def _hinted_column(
    name: Any, categories: Sequence[Any] | None, closed: Sequence[Any] | None, handled: bool
) -> ColumnSpec:
    seen, _ = _split_missing(categories)
    known, closed_has_missing = _split_missing(closed)
    return ColumnSpec(
        name=name,
        missing_handled=handled or closed_has_missing,
        categories=None if seen is None else seen[:MAX_CATEGORIES],
        categories_truncated=seen is not None and len(seen) > MAX_CATEGORIES,
        closed_categories=known,
    )


def _hinted_array(shape: Sequence[int | None], dtype: str | None, handled: bool) -> ArraySchema:
    dims = tuple(None if dim is None else int(dim) for dim in shape)
    try:
        numpy_dtype = np.dtype(dtype) if dtype not in (None, "string") else None
    except TypeError:
        numpy_dtype = None
    if dtype == "string":
        return ArraySchema(dims, "object", "string", None, handled)
    if numpy_dtype is None:
        return ArraySchema(dims, None, "any", None, handled)
    family = _dtype_family(numpy_dtype)
    kind = family if family in KINDS and family != "categorical" else "any"
    return ArraySchema(dims, str(numpy_dtype), kind, None, handled)
