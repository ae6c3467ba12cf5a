"""Raw column values -> the training dtype: every lossless coercion, every refusal, per column."""

from __future__ import annotations

import decimal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from ..errors import MAX_LISTED
from .columns import ColumnSpec
from .dtypes import _DATETIME_TYPES, _NUMBER_TYPES, _dtype_family, _numpy_dtype, _timezone
from .messages import _capped, _plural, _Problem, _show, _sorted, _Where


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
    if not problems and values.family not in _PLACEHOLDERS:
        # Parsed text and Python ints beyond int64 arrive as float64, where -2**63 - 1
        # rounds to -2**63 and would pass the range check: compare the exact integers.
        exact = _exact_int_range_problem(values, target, where)
        problems += [exact] if exact is not None else []
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


def _exact_int_range_problem(values: _Values, target: np.dtype, where: _Where) -> _Problem | None:
    """Refuse integers (Python ints, integral text) outside `target`'s range, compared exactly."""
    info = np.iinfo(target)
    bad = np.zeros(len(values.data), dtype=bool)
    for index in np.flatnonzero(~values.mask):
        exact = _exact_int(values.data[index])
        bad[index] = exact is not None and not info.min <= exact <= info.max
    if not bad.any():
        return None
    return _offenders(
        where,
        bad,
        values.data,
        expected=f"values that fit {target} ({info.min:,} to {info.max:,})",
        nouns=("in range", "in range"),
        remedy=f"The training dtype is {target}; fix these values before predicting.",
    )


def _exact_int(value: Any) -> int | None:
    """`value` as an exact int when it is one (int, integral text or Decimal), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral():
        return int(value)
    return None


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
    problems += _infinity_problems(converted.data, spec, where)
    if converted.data is not None:
        problems += _unseen_problems(converted.data, converted.mask, spec, where)
    return _Converted(None if problems else converted.data, converted.mask, problems)


def _missing_problems(mask: np.ndarray, spec: ColumnSpec, where: _Where) -> list[_Problem]:
    if spec.allows_missing or not mask.any():
        return []
    unit = where.unit
    text = (
        f"{where.subject} has missing values (NaN/None) in {_flagged(mask, where)}, but the "
        "training example had none and no preprocessing step imputes them.\n"
        f"Fill or drop these {unit}s before predicting."
    )
    return [where.problem(text)]


def _flagged(mask: np.ndarray, where: _Where) -> str:
    """``"2 of 3 rows (rows 1, 2)"``: the units (rows, samples) `mask` flags, first ones listed."""
    flagged = np.flatnonzero(where.per_unit(mask))
    total = where.shape[0] if where.shape else 1
    first = ", ".join(str(i) for i in flagged[:MAX_LISTED]) + (
        ", ..." if len(flagged) > MAX_LISTED else ""
    )
    at = f"{where.unit}s" if len(flagged) > 1 else where.unit
    return f"{len(flagged):,} of {_plural(total, where.unit)} ({at} {first})"


def _infinity_problems(data: Any, spec: ColumnSpec, where: _Where) -> list[_Problem]:
    """Refuse infinity where the preprocessing refuses it (scikit-learn's check_array)."""
    if not spec.refuses_infinity or getattr(data, "dtype", None) is None or data.dtype.kind != "f":
        return []
    infinite = np.isinf(data)
    if not infinite.any():
        return []
    text = (
        f"{where.subject} has infinite values in {_flagged(infinite, where)}, which its "
        "preprocessing refuses: scikit-learn's transformers take finite numbers only (and NaN "
        "only where a step imputes it).\n"
        f"Replace these {where.unit}s' values with finite numbers before predicting."
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
