"""`ColumnSpec`: one tabular column of the contract (kind, dtype, missing values, categories)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from .dtypes import _MISSING_VALUES, KINDS, _decode_dtype
from .messages import _json_scalar, _type_name


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
        refuses_infinity: the preprocessing refuses infinity in this (float) column, so the
            contract refuses it, naming the column, before any step runs.
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
    refuses_infinity: bool = False

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
        data = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}
        if not self.refuses_infinity:  # written only when set: older readers keep reading
            del data["refuses_infinity"]
        return data

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
    "refuses_infinity": (bool,),
}
_ARRAY_FIELDS: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "shape": (list,),
    "dtype": _OPTIONAL_TEXT,
    "value_kind": (str,),
    "has_missing": _OPTIONAL_FLAG,
    "missing_handled": (bool,),
    "refuses_infinity": (bool,),
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
