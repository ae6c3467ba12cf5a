"""Which distributions a profile follows, and how to read their values from data.

A feature is planned once, at save time, from the input contract and the profiled sample,
and stored in the profile as a `source` (input, column, channel, reduce). Reading values is
lenient on purpose: drift is measured on data the contract might refuse (an unseen category,
missing values, text in a numeric column), so nothing here raises for bad values; they are
counted instead (unparseable numbers and infinities as missing).

Values come out in two forms only: float64 with NaN for missing (numeric features, text
lengths), or an object array of category keys with None for missing (categorical features).
Category keys are text: ``str(value)``, and ``"True"``/``"False"`` for booleans.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..contract import match_by_text

# A text column is categorical when its distinct values are few, or few per row.
MAX_CATEGORY_DISTINCT = 10_000
CATEGORICAL_RATIO = 0.5
SMALL_DISTINCT = 100
# Arrays: one feature per column up to this many columns (a feature matrix); per channel
# (mean and std per sample) up to MAX_CHANNELS channels (images); else the whole sample.
MAX_ARRAY_COLUMNS = 64
MAX_CHANNELS = 16

__all__ = ["FeatureSource", "extract", "plan_features"]


@dataclass(frozen=True)
class FeatureSource:
    """A planned feature: its name, kind and where its values come from."""

    name: str
    kind: str  # numeric | categorical | text
    input: str | None = None
    column: str | None = None
    channel: int | None = None
    reduce: str = "value"  # value | mean | std | length

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "column": self.column,
            "channel": self.channel,
            "reduce": self.reduce,
        }

    @classmethod
    def of(cls, name: str, kind: str, source: Mapping[str, Any]) -> FeatureSource:
        return cls(
            name,
            kind,
            source.get("input"),
            source.get("column"),
            source.get("channel"),
            source.get("reduce", "value"),
        )


# --------------------------------------------------------------------------- planning


def plan_features(
    schema: Mapping[str, Any] | None, sample: Any
) -> tuple[list[FeatureSource], dict[str, str]]:
    """The features to profile for an input `schema` (its dict form) and a canonical sample.

    Returns:
        ``(features, skipped)``: skipped maps a column to why it is not followed.
    """
    if schema is None:
        return _plan_untyped(sample)
    kind = schema.get("kind")
    if kind == "multi":
        features, skipped = [], {}
        for name, sub in schema["inputs"].items():
            part = sample[name] if isinstance(sample, Mapping) else None
            found, why = _plan_one(sub, part, name)
            features += found
            skipped.update(why)
        return features, skipped
    return _plan_one(schema, sample, None)


def _plan_untyped(sample: Any) -> tuple[list[FeatureSource], dict[str, str]]:
    if isinstance(sample, pd.DataFrame):
        columns = [{"name": name, "kind": _kind_of_dtype(sample[name])} for name in sample]
        return _plan_one({"kind": "tabular", "columns": columns}, sample, None)
    array = np.asarray(sample)
    schema = {"kind": "array", "shape": list(array.shape[1:]), "value_kind": "float"}
    return _plan_one(schema, array, None)


def _kind_of_dtype(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series.dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(series.dtype):
        return "float"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return "datetime"
    return "string"


def _plan_one(
    schema: Mapping[str, Any], sample: Any, input_name: str | None
) -> tuple[list[FeatureSource], dict[str, str]]:
    prefix = f"{input_name}/" if input_name else ""
    if schema.get("kind") == "tabular":
        features, skipped = [], {}
        for column in schema["columns"]:
            name, kind = column["name"], column["kind"]
            label = f"{prefix}{name}"
            if kind in ("float", "integer", "datetime"):
                features.append(FeatureSource(label, "numeric", input_name, name))
            elif kind in ("bool", "categorical"):
                features.append(FeatureSource(label, "categorical", input_name, name))
            elif kind == "string":
                text = _looks_like_text(sample[name]) if sample is not None else False
                features.append(
                    FeatureSource(label, "text", input_name, name, reduce="length")
                    if text
                    else FeatureSource(label, "categorical", input_name, name)
                )
            else:
                skipped[label] = "values of mixed types"
        return features, skipped
    shape = list(schema.get("shape") or [])
    if schema.get("value_kind") not in ("float", "integer", "bool"):
        return [], {input_name or "(array)": f"array of {schema.get('value_kind')} values"}
    base = input_name or "input"
    if not shape:
        return [FeatureSource(input_name or "value", "numeric", input_name)], {}
    if len(shape) == 1 and shape[0] is not None and shape[0] <= MAX_ARRAY_COLUMNS:
        return [
            FeatureSource(f"{prefix}{i}", "numeric", input_name, channel=i) for i in range(shape[0])
        ], {}
    channels = shape[-1]
    if len(shape) >= 2 and channels is not None and channels <= MAX_CHANNELS:
        return [
            FeatureSource(f"{base}[c{c}] {reduce}", "numeric", input_name, channel=c, reduce=reduce)
            for c in range(channels)
            for reduce in ("mean", "std")
        ], {}
    return [
        FeatureSource(f"{base} {reduce}", "numeric", input_name, reduce=reduce)
        for reduce in ("mean", "std")
    ], {}


def _looks_like_text(series: pd.Series) -> bool:
    """Free text rather than categories: many distinct values, and many per row."""
    present = series.dropna()
    distinct = present.nunique()
    if distinct <= SMALL_DISTINCT:
        return False
    return distinct > MAX_CATEGORY_DISTINCT or distinct > CATEGORICAL_RATIO * len(present)


# --------------------------------------------------------------------------- reading


def extract(features: Sequence[FeatureSource], data: Any, rows: int | None = None) -> dict:
    """``{feature name: values}`` for every feature, read leniently from `data`.

    Args:
        features: the planned features (all of one role).
        data: a DataFrame, an ndarray, or a dict of those keyed by model input name; a
            feature whose column or input is absent reads as all missing.
        rows: the number of rows, when `data` cannot tell (an absent input).
    """
    n = rows if rows is not None else _rows(data)
    values: dict[str, np.ndarray] = {}
    arrays: dict[tuple[str | None, str], np.ndarray] = {}  # per (input, reduce): all channels
    renamed: dict[int, Any] = {}  # per frame: its columns under the recorded names
    for feature in features:
        part = data.get(feature.input) if feature.input is not None else data
        if isinstance(data, Mapping) and feature.input is None and feature.column is None:
            part = next(iter(data.values()), None)
        if feature.column is not None:
            if isinstance(part, pd.DataFrame):
                if id(part) not in renamed:
                    renamed[id(part)] = _recorded_names(part, features, feature.input)
                part = renamed[id(part)]
            values[feature.name] = _column_values(feature, part, n)
        else:
            values[feature.name] = _array_values(feature, part, n, arrays)
    return values


def _recorded_names(
    frame: pd.DataFrame, features: Sequence[FeatureSource], input_name: str | None
) -> pd.DataFrame:
    """`frame` with columns the contract reaches by text ("0" for a recorded 0) renamed."""
    names = [f.column for f in features if f.column is not None and f.input == input_name]
    renames, _ = match_by_text(frame.columns, list(dict.fromkeys(names)))
    return frame.rename(columns=renames) if renames else frame


def _rows(data: Any) -> int:
    if isinstance(data, Mapping):
        return max((_rows(part) for part in data.values()), default=0)
    return len(data) if data is not None else 0


def _column_values(feature: FeatureSource, frame: Any, n: int) -> np.ndarray:
    if isinstance(frame, Mapping):  # columns as arrays (a model's outputs)
        series = frame.get(feature.column)
    elif frame is not None and hasattr(frame, "columns") and feature.column in frame.columns:
        series = frame[feature.column]
    else:
        series = None
    if series is None:
        if feature.kind == "categorical":
            return np.full(n, None, dtype=object)
        return np.full(n, np.nan)
    if feature.kind == "categorical":
        return category_keys(series)
    if feature.kind == "text":
        return text_lengths(series)
    return numbers(series)


def numbers(series: Any) -> np.ndarray:
    """float64 values, NaN for missing, unparseable or infinite values."""
    if not isinstance(series, pd.Series):
        series = pd.Series(np.asarray(series).reshape(-1))
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        values = _seconds(series)
    elif pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        values = _with_datetimes(series, values)
    if values.size and not np.isfinite(values).all():
        values = np.where(np.isfinite(values), values, np.nan)
    return values


def _with_datetimes(series: pd.Series, values: np.ndarray) -> np.ndarray:
    """`values` with those that are no numbers but ISO-8601 datetimes (or date objects)
    read as their seconds: CSV, JSON and a server's requests bring datetime columns as
    text, which the input contract parses, so drift must read them the same way."""
    unparsed = np.isnan(values) & ~pd.isna(series).to_numpy()
    if not unparsed.any():
        return values
    values = values.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mixed offsets, mixed types: counted, not fatal
        parsed = pd.to_datetime(
            series[unparsed], errors="coerce", utc=True, format="ISO8601"
        ).dt.tz_localize(None)
    values[unparsed] = _seconds(pd.Series(parsed))
    return values


def _seconds(series: pd.Series) -> np.ndarray:
    """Datetimes as float seconds since the epoch (UTC for aware ones)."""
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    nanoseconds = series.astype("datetime64[ns]").to_numpy().view(np.int64).astype(np.float64)
    return np.where(series.isna().to_numpy(), np.nan, nanoseconds / 1e9)


def category_keys(series: Any) -> np.ndarray:
    """Category keys as an object array of str, None for missing values."""
    if isinstance(series, pd.Series):
        dtype = series.dtype
        if isinstance(dtype, pd.StringDtype):  # text already: only missing values to mark
            return series.to_numpy(dtype=object, na_value=None)
        if pd.api.types.is_bool_dtype(dtype):
            return np.where(series.to_numpy(), "True", "False").astype(object)
        values = series.to_numpy(dtype=object)
    else:
        values = np.asarray(series, dtype=object).reshape(-1)
    if len(values) < 4096:
        return np.array(
            [v if type(v) is str else (None if _missing(v) else _key(v)) for v in values],
            dtype=object,
        )
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        out = values.copy()
        out[pd.isna(values)] = None
        return out
    out = np.array([_key(value) for value in values], dtype=object)
    out[pd.isna(values)] = None
    return out


def _key(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def text_lengths(series: Any) -> np.ndarray:
    """Lengths of texts in characters, NaN for missing values."""
    if not isinstance(series, pd.Series):
        series = pd.Series(np.asarray(series, dtype=object).reshape(-1))
    return (
        series.astype(object)
        .map(lambda v: len(str(v)) if not _missing(v) else np.nan)
        .to_numpy(dtype=np.float64)
    )


def _missing(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, (float, np.floating)) and value != value)
    )


def _array_values(
    feature: FeatureSource, part: Any, n: int, cache: dict[tuple[str | None, str], np.ndarray]
) -> np.ndarray:
    if part is None:
        return np.full(n, np.nan)
    if isinstance(part, pd.DataFrame):
        part = part.to_numpy()
    array = np.asarray(part)
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            return np.full(len(array), np.nan)
    if feature.reduce == "value":
        flat = array.reshape(len(array), -1)
        if feature.channel is None:
            return numbers(flat[:, 0])
        return numbers(flat[:, feature.channel])
    key = (
        feature.input,
        feature.reduce if feature.channel is not None else f"all-{feature.reduce}",
    )
    if key not in cache:
        cache[key] = _per_sample(array, feature.reduce, per_channel=feature.channel is not None)
    reduced = cache[key]
    return reduced[:, feature.channel] if feature.channel is not None else reduced


def _per_sample(array: np.ndarray, reduce: str, *, per_channel: bool) -> np.ndarray:
    """Per sample mean or std, per channel (last axis) or over the whole sample."""
    n = len(array)
    shaped = array.reshape(n, -1, array.shape[-1]) if per_channel else array.reshape(n, -1)
    if shaped.shape[1] == 0:
        return np.full((n, array.shape[-1]) if per_channel else n, np.nan)
    # float32 sums are exact enough for means of pixels and 2x faster than float64.
    work = shaped.astype(np.float32, copy=False) if shaped.dtype.kind in "biu" else shaped
    with np.errstate(invalid="ignore"):
        result = work.mean(axis=1) if reduce == "mean" else work.std(axis=1)
    return np.asarray(result, dtype=np.float64)
