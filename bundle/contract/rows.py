"""Rows of canonical values: count, slice and join them, whatever their form.

A canonical input (what the contract returns) or a prediction result is a DataFrame, an
ndarray, or a dict or list of those (multi-input models, several outputs). The predict
engine cuts it into chunks, the server merges requests into one batch and splits the
answer, Spark re-cuts Arrow batches: all of them go through these three functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["concat_rows", "n_rows", "slice_rows"]


def n_rows(value: Any) -> int:
    """The number of rows (of the first part, for a dict or list)."""
    if isinstance(value, Mapping):
        values = list(value.values())
        return n_rows(values[0]) if values else 0
    if isinstance(value, (list, tuple)):
        return n_rows(value[0]) if value else 0
    return len(value)


def slice_rows(value: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` (None stays None), without copying where the form allows."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {key: slice_rows(item, start, stop) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [slice_rows(item, start, stop) for item in value]
    if hasattr(value, "iloc"):
        return value.iloc[start:stop]
    return value[start:stop]


def concat_rows(parts: Sequence[Any]) -> Any:
    """The parts joined along rows (DataFrames get a fresh 0..n-1 index)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, Mapping):
        return {key: concat_rows([part[key] for part in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        return [concat_rows([part[i] for part in parts]) for i in range(len(first))]
    if hasattr(first, "iloc"):
        import pandas as pd

        return pd.concat(parts, ignore_index=True)  # copy-on-write: no copy to opt out of
    return np.concatenate(parts, axis=0)
