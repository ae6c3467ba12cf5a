"""Streaming drift counts against a profile: bounded memory, mergeable, a window for servers.

`DriftAccumulator` keeps, per profiled feature, only counts (never values): for numeric
features the number of values in each bucket between consecutive reference values (and
exactly at each), for categorical ones the count per top training category, of other seen
values, of unseen values (with the most frequent unseen ones named), and of missing values.
Every statistic of the report derives from those counts, so accumulators built on batches,
on Spark partitions or on time slots merge by adding, and give the same report as one pass.

Memory per numeric feature: ``2 * len(reference) + 1`` counters (at most 4,001); per
categorical feature: the top categories plus at most `MAX_TRACKED_UNSEEN` named unseen values.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bundle.errors import UsageError
from bundle.format.profile import FeatureProfile, Profile

from .features import FeatureSource, extract

MAX_TRACKED_UNSEEN = 1000  # distinct unseen values named per feature; the rest only counted

__all__ = ["CategoricalCounts", "DriftAccumulator", "NumericCounts", "SlidingWindow"]


def _splits(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bucket boundaries at each reference value t and just above it (t's next float).

    Returns ``(splits, at, above)``: ``splits`` strictly increasing, and the position in it
    of each reference value and of its successor, so that ``count(x < t)`` and
    ``count(x <= t) = count(x < nextafter(t))`` are cumulative bucket counts.
    """
    reference = np.asarray(reference, dtype=np.float64)
    successors = np.nextafter(reference, np.inf)
    splits = np.unique(np.concatenate([reference, successors]))
    return splits, np.searchsorted(splits, reference), np.searchsorted(splits, successors)


class NumericCounts:
    """Counts of one numeric feature's values in the buckets of its reference values."""

    __slots__ = ("_above", "_at", "buckets", "missing", "profile", "splits")

    def __init__(self, profile: FeatureProfile):
        self.profile = profile
        self.splits, self._at, self._above = _splits(profile.reference)
        self.buckets = np.zeros(len(self.splits) + 1, dtype=np.int64)
        self.missing = 0

    def add(self, values: np.ndarray) -> None:
        present = values[~np.isnan(values)]
        self.missing += len(values) - len(present)
        if not len(present):
            return
        if len(present) < 64:  # one-row requests: no 4,000-counter temporary per call
            np.add.at(self.buckets, np.searchsorted(self.splits, present, side="right"), 1)
        elif len(present) < 4 * len(self.splits):
            index = np.searchsorted(self.splits, present, side="right")
            self.buckets += np.bincount(index, minlength=len(self.buckets))
        else:
            # Large batches: sorting the values and searching the splits in them is several
            # times faster than searching each value among thousands of splits (cache).
            below = np.searchsorted(np.sort(present), self.splits, side="left")
            self.buckets += np.diff(below, prepend=0, append=len(present))

    def add_counts(self, bucket: int | None, count: int) -> None:
        """Add `count` values of bucket `bucket` (None: missing), as an aggregation found."""
        if bucket is None:
            self.missing += count
        else:
            self.buckets[bucket] += count

    def merge(self, other: NumericCounts) -> None:
        self.buckets += other.buckets
        self.missing += other.missing

    @property
    def present(self) -> int:
        return int(self.buckets.sum())

    @property
    def total(self) -> int:
        return self.present + self.missing

    def below(self, positions: np.ndarray) -> np.ndarray:
        """How many values are < splits[p] for each position p (cumulative buckets)."""
        cumulative = np.cumsum(self.buckets)
        return cumulative[np.asarray(positions, dtype=np.int64)]

    def at_reference(self) -> tuple[np.ndarray, np.ndarray]:
        """``(count(x < t), count(x <= t))`` for each reference value t."""
        cumulative = np.cumsum(self.buckets)
        return cumulative[self._at], cumulative[self._above]

    def counts_between(self, edges: Sequence[float]) -> np.ndarray:
        """Counts in the bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``; edges must be
        reference values."""
        positions = np.searchsorted(self.splits, np.asarray(edges, dtype=np.float64))
        inner = self.below(positions) if len(positions) else np.array([], dtype=np.int64)
        return np.diff(np.concatenate([[0], inner, [self.present]]))

    def out_of_range(self) -> tuple[int, int]:
        """Values below the training minimum and above the training maximum."""
        if not len(self.profile.reference):
            return 0, 0
        below, at_or_below = self.at_reference()
        return int(below[0]), int(self.present - at_or_below[-1])


class CategoricalCounts:
    """Counts of one categorical feature's values: per top category, other, unseen, missing."""

    __slots__ = ("_index", "_seen", "counts", "missing", "other", "profile", "unseen",
                 "unseen_values")  # fmt: skip

    def __init__(self, profile: FeatureProfile):
        self.profile = profile
        self._index = {key: i for i, key in enumerate(profile.categories or ())}
        self._seen = frozenset(profile.seen.tolist()) if profile.seen is not None else None
        self.counts = np.zeros(len(self._index), dtype=np.int64)
        self.other = 0
        self.unseen = 0
        self.missing = 0
        self.unseen_values: Counter[str] = Counter()

    def add(self, keys: np.ndarray) -> None:
        # Count the distinct keys first (C code either way), then place each distinct key:
        # a batch holds few of them, so the per-key work is small whatever the batch size.
        if len(keys) < 4096:
            found = Counter(keys.tolist())
        else:
            found = pd.Series(keys, dtype=object).value_counts(dropna=False).to_dict()
        for key, count in found.items():
            if key is None or key != key:  # None, or a NaN that slipped through
                self.missing += count
                continue
            position = self._index.get(key)
            if position is not None:
                self.counts[position] += count
            elif self._seen is None or key in self._seen:
                self.other += count
            else:
                self.unseen += count
                self.name_unseen(str(key), count)

    def add_counts(self, key: str | None, count: int, *, unseen: bool = False) -> None:
        """Add `count` values of `key` (None: missing), as an aggregation found.

        A key that is not a top category counts as other, or as unseen with `unseen`.
        """
        if key is None:
            self.missing += count
            return
        position = self._index.get(key)
        if position is not None:
            self.counts[position] += count
        elif unseen:
            self.unseen += count
        else:
            self.other += count

    def name_unseen(self, key: str, count: int) -> None:
        """Record `count` occurrences of the unseen value `key` (already counted as unseen)."""
        if key in self.unseen_values or len(self.unseen_values) < MAX_TRACKED_UNSEEN:
            self.unseen_values[key] += count

    def merge(self, other: CategoricalCounts) -> None:
        self.counts += other.counts
        self.other += other.other
        self.missing += other.missing
        self.unseen += other.unseen
        for value, count in other.unseen_values.items():
            if value in self.unseen_values or len(self.unseen_values) < MAX_TRACKED_UNSEEN:
                self.unseen_values[value] += count

    @property
    def present(self) -> int:
        return int(self.counts.sum()) + self.other + self.unseen

    @property
    def total(self) -> int:
        return self.present + self.missing


def counts_for(feature: FeatureProfile) -> NumericCounts | CategoricalCounts:
    return NumericCounts(feature) if feature.is_numeric else CategoricalCounts(feature)


class DriftAccumulator:
    """Counts of current data against a `Profile`, batch by batch.

    Example:
        >>> accumulator = DriftAccumulator(bundle.profile, outputs=False)
        >>> for frame in frames:                 # e.g. batches read from a file
        ...     accumulator.update(frame)
        >>> print(accumulator.report())
    """

    def __init__(self, profile: Profile, *, outputs: bool = True):
        self.profile = profile
        features = [f for f in profile if outputs or f.role == "input"]
        self.counts = {f.name: counts_for(f) for f in features}
        self._sources = {
            role: [FeatureSource.of(f.name, f.kind, f.source) for f in features if f.role == role]
            for role in ("input", "output")
        }
        self.rows = 0
        self.output_rows = 0
        self.refused_rows = 0
        self.refusal: str | None = None

    def refuse(self, rows: int, reason: str) -> None:
        """Note `rows` whose outputs could not be computed (the first reason is kept)."""
        self.refused_rows += rows
        self.refusal = self.refusal or reason

    @property
    def follows_outputs(self) -> bool:
        return bool(self._sources["output"])

    def update(self, inputs: Any, outputs: Any = None, *, rows: int | None = None) -> None:
        """Count one batch of inputs (canonical or raw DataFrame/array/dict) and outputs.

        Args:
            inputs: the batch as the bundle takes it; absent columns count as missing.
            outputs: the batch's outputs frame (``prediction``, ``score_*`` columns), or None.
            rows: the batch's rows, when `inputs` cannot tell.
        """
        values = extract(self._sources["input"], inputs, rows)
        n = next((len(v) for v in values.values()), rows or 0)
        for name, column in values.items():
            self.counts[name].add(column)
        self.rows += n
        if outputs is not None and self._sources["output"]:
            produced = extract(self._sources["output"], outputs)
            for name, column in produced.items():
                self.counts[name].add(column)
            self.output_rows += next((len(v) for v in produced.values()), 0)

    def merge(self, other: DriftAccumulator) -> DriftAccumulator:
        """Add `other`'s counts (same profile) to this one; returns self."""
        for name, counts in other.counts.items():
            if name in self.counts:
                self.counts[name].merge(counts)
        self.rows += other.rows
        self.output_rows += other.output_rows
        if other.refused_rows:
            self.refuse(other.refused_rows, other.refusal or "")
        return self

    def report(self, thresholds: Any = None, *, label: str | None = None) -> Any:
        """The drift report of everything counted so far (see `bundle.drift.DriftReport`)."""
        from .report import build_report

        return build_report(self, thresholds, label=label)


class SlidingWindow:
    """A `DriftAccumulator` over the last `seconds`, kept as `slots` rotating accumulators.

    Thread-safe: a server's batch worker calls `update`, scrapes call `report`. Memory is
    `slots` accumulators whatever the traffic; a report merges the live slots.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        seconds: float = 600.0,
        slots: int = 10,
        outputs: Any = None,
        clock: Any = time.monotonic,
    ):
        if seconds <= 0 or slots < 1:
            raise UsageError(
                f"A drift window needs seconds > 0 and slots >= 1; got {seconds}, {slots}."
            )
        self.profile = profile
        self.seconds = float(seconds)
        self.slot_seconds = self.seconds / slots
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[int, DriftAccumulator] = {}
        self._n_slots = slots
        self._outputs = outputs  # (scores, predictions) -> outputs frame, for `observe`

    def _current(self) -> DriftAccumulator:
        slot = int(self._clock() // self.slot_seconds)
        accumulator = self._slots.get(slot)
        if accumulator is None:
            oldest = slot - self._n_slots + 1
            for old in [key for key in self._slots if key < oldest]:
                del self._slots[old]
            accumulator = self._slots[slot] = DriftAccumulator(self.profile)
        return accumulator

    def update(self, inputs: Any, outputs: Any = None, *, rows: int | None = None) -> None:
        """Count a batch of inputs and its outputs frame in the current slot."""
        with self._lock:
            self._current().update(inputs, outputs, rows=rows)

    def observe(self, inputs: Any, scores: Any, predictions: Any = None) -> None:
        """Count a scored batch: canonical inputs, the model's scores and decoded labels."""
        frame = self._outputs(scores, predictions) if self._outputs is not None else None
        self.update(inputs, frame)

    def snapshot(self) -> DriftAccumulator:
        """One accumulator holding the counts of the live slots."""
        merged = DriftAccumulator(self.profile)
        with self._lock:
            oldest = int(self._clock() // self.slot_seconds) - self._n_slots + 1
            for slot, accumulator in self._slots.items():
                if slot >= oldest:
                    merged.merge(accumulator)
        return merged

    def report(self, thresholds: Any = None, *, label: str | None = None) -> Any:
        return self.snapshot().report(thresholds, label=label)
