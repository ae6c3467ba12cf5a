"""Training dtypes as text, and the families they fall in (numbers, text, datetimes)."""

from __future__ import annotations

import datetime as _dt
import decimal
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as pdt

KINDS = ("float", "integer", "bool", "string", "categorical", "datetime", "any")
MAX_CATEGORIES = 1000
ALL_ARRAYS = "*"  # the `missing_handled` key that stands for array input

_MISSING_VALUES: dict[str, Any] = {"nan": np.nan, "none": None}
_NUMBER_TYPES = (str, bool, int, float, np.number, np.bool_, decimal.Decimal)
_DATETIME_TYPES = (str, _dt.date, np.datetime64)
_STRING_DTYPE = re.compile(r"(str|string)\[(python|pyarrow)\]")


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
