"""Build the training profile from data: sample it to a bounded size, then describe it.

`RowSampler` keeps a uniform sample of at most `max_rows` rows from chunks of any size
(bottom-k of random keys: every row has the same chance, memory bounded by the sample plus
one chunk), so ``profile_data=`` may be a file far larger than memory. `build_profile`
describes the sample feature by feature (see `bundle.format.profile.FeatureProfile`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bundle.errors import UsageError
from bundle.format.profile import FeatureProfile, Profile

from .features import FeatureSource, extract, plan_features

MAX_PROFILE_ROWS = 100_000
MAX_REFERENCE = 2_000  # reference values kept per numeric feature (for KS and plots)
PSI_BINS = 10  # equal-frequency bins of the training data
TOP_CATEGORIES = 50
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
SEED = 0

__all__ = ["MAX_PROFILE_ROWS", "RowSampler", "build_profile", "chunks_of", "describe"]


# --------------------------------------------------------------------------- sampling


def take(data: Any, index: np.ndarray) -> Any:
    """Rows `index` of a DataFrame, ndarray or dict of those."""
    if isinstance(data, Mapping):
        return {key: take(value, index) for key, value in data.items()}
    if hasattr(data, "iloc"):
        return data.iloc[index].reset_index(drop=True)
    return np.asarray(data)[index]


def concat(parts: Sequence[Any]) -> Any:
    """Rows of several chunks as one chunk."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {key: concat([part[key] for part in parts]) for key in first}
    if hasattr(first, "iloc"):
        return pd.concat(parts, ignore_index=True)
    return np.concatenate([np.asarray(part) for part in parts])


def n_rows(data: Any) -> int:
    if isinstance(data, Mapping):
        return next((n_rows(value) for value in data.values()), 0)
    return len(data)


def chunks_of(data: Any, size: int = 65_536) -> Iterator[Any]:
    """`data` (DataFrame, ndarray, dict of them) in chunks of at most `size` rows."""
    total = n_rows(data)
    for start in range(0, total, size):
        yield take(data, np.arange(start, min(start + size, total)))


class RowSampler:
    """A uniform random sample of at most `max_rows` rows over a stream of chunks."""

    def __init__(self, max_rows: int = MAX_PROFILE_ROWS, *, seed: int = SEED):
        if max_rows < 1:
            raise UsageError(f"max_rows must be at least 1; got {max_rows}.")
        self.max_rows = max_rows
        self.rows_seen = 0
        self._rng = np.random.default_rng(seed)
        self._sample: Any = None
        self._keys = np.empty(0)

    def add(self, chunk: Any) -> None:
        rows = n_rows(chunk)
        if rows == 0:
            return
        self.rows_seen += rows
        keys = self._rng.random(rows)
        if self._sample is None and rows <= self.max_rows:
            self._sample, self._keys = chunk, keys
            return
        merged = chunk if self._sample is None else concat([self._sample, chunk])
        all_keys = keys if self._sample is None else np.concatenate([self._keys, keys])
        if len(all_keys) <= self.max_rows:
            self._sample, self._keys = merged, all_keys
            return
        keep = np.sort(np.argpartition(all_keys, self.max_rows - 1)[: self.max_rows])
        self._sample, self._keys = take(merged, keep), all_keys[keep]

    def extend(self, chunks: Iterable[Any]) -> RowSampler:
        for chunk in chunks:
            self.add(chunk)
        return self

    @property
    def sample(self) -> Any:
        """The sampled rows (None before any row)."""
        return self._sample


# --------------------------------------------------------------------------- describing


def build_profile(
    schema: Mapping[str, Any] | None,
    inputs: Any,
    outputs: pd.DataFrame | None = None,
    *,
    source_rows: int | None = None,
    seed: int = SEED,
) -> Profile:
    """Describe a (sampled, canonical) input batch and the model's outputs for it.

    Args:
        schema: the bundle's input schema (its dict form), None to infer kinds from dtypes.
        inputs: the sample, in the bundle's canonical input form.
        outputs: the outputs frame for the same rows (``prediction``, ``score_*``), or None.
        source_rows: rows the sample was drawn from (default: the sample's own rows).
    """
    rng = np.random.default_rng(seed)
    planned, skipped = plan_features(schema, inputs)
    rows = n_rows(inputs)
    features = describe(planned, extract(planned, inputs, rows), "input", rng)
    if outputs is not None and len(outputs.columns):
        output_plan, _ = plan_features(None, outputs)
        features += describe(output_plan, extract(output_plan, outputs), "output", rng)
    return Profile(
        rows=rows,
        source_rows=max(source_rows or rows, rows),
        features=tuple(features),
        skipped=skipped,
    )


def describe(
    planned: Sequence[FeatureSource], values: Mapping[str, np.ndarray], role: str, rng: Any
) -> list[FeatureProfile]:
    """One `FeatureProfile` per planned feature, from its values."""
    described = []
    for source in planned:
        column = values[source.name]
        if source.kind == "categorical":
            described.append(_categorical(source, column, role))
        else:
            described.append(_numeric(source, column, role, rng))
    return described


def _numeric(source: FeatureSource, values: np.ndarray, role: str, rng: Any) -> FeatureProfile:
    present = values[~np.isnan(values)]
    common = {
        "name": source.name,
        "role": role,
        "kind": source.kind,
        "source": source.to_json(),
        "count": len(values),
        "missing": len(values) - len(present),
    }
    if not len(present):
        empty = np.empty(0)
        return FeatureProfile(
            **common,
            quantiles={},
            edges=(),
            histogram=(0,),
            reference=empty,
            reference_counts=empty.astype(np.int64),
        )
    reference, counts = _reference(present, rng)
    edges = _psi_edges(reference, counts)
    histogram = np.bincount(
        np.searchsorted(np.asarray(edges), present, side="right"), minlength=len(edges) + 1
    )
    quantiles = np.quantile(present, QUANTILES)
    return FeatureProfile(
        **common,
        minimum=float(present.min()),
        maximum=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        edges=tuple(float(edge) for edge in edges),
        histogram=tuple(int(count) for count in histogram),
        reference=reference,
        reference_counts=counts,
    )


def _reference(present: np.ndarray, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique reference values with counts: all of them, or a uniform subsample of
    `MAX_REFERENCE` values that always holds the minimum and the maximum (for ranges)."""
    values, counts = np.unique(present, return_counts=True)
    if len(values) <= MAX_REFERENCE:
        return values, counts.astype(np.int64)
    chosen = rng.choice(present, MAX_REFERENCE - 2, replace=False)
    chosen = np.concatenate([chosen, [present.min(), present.max()]])
    values, counts = np.unique(chosen, return_counts=True)
    return values, counts.astype(np.int64)


def _psi_edges(reference: np.ndarray, counts: np.ndarray) -> list[float]:
    """Inner edges of `PSI_BINS` equal-frequency bins, each a reference value."""
    cumulative = np.cumsum(counts) / counts.sum()
    levels = np.arange(1, PSI_BINS) / PSI_BINS
    positions = np.minimum(np.searchsorted(cumulative, levels, side="right"), len(reference) - 1)
    edges = np.unique(reference[positions])
    return [float(edge) for edge in edges if edge > reference[0]]


def _categorical(source: FeatureSource, keys: np.ndarray, role: str) -> FeatureProfile:
    missing = pd.isna(keys)
    present = pd.Series(keys[~missing], dtype=object)
    frequencies = present.value_counts(sort=False)
    # Most frequent first, ties by value: the same profile from the same data, always.
    order = sorted(frequencies.items(), key=lambda item: (-item[1], str(item[0])))
    top = order[:TOP_CATEGORIES]
    from .features import MAX_CATEGORY_DISTINCT

    seen = (
        np.array(sorted(str(value) for value in frequencies.index), dtype=str)
        if len(frequencies) <= MAX_CATEGORY_DISTINCT
        else None
    )
    return FeatureProfile(
        name=source.name,
        role=role,
        kind="categorical",
        source=source.to_json(),
        count=len(keys),
        missing=int(missing.sum()),
        categories=tuple(str(value) for value, _ in top),
        category_counts=tuple(int(count) for _, count in top),
        other=int(sum(count for _, count in order[TOP_CATEGORIES:])),
        distinct=len(frequencies),
        seen=seen,
    )
