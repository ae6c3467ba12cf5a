"""Drift: compare data against the training profile a bundle carries.

``Bundle.drift(data)`` and ``bundle drift PATH DATA`` stream data through a
`DriftAccumulator` (counts only, bounded memory) and build a `DriftReport`: per feature the
population stability index, the Kolmogorov-Smirnov statistic (numeric) or the Jensen-Shannon
distance and chi-square (categorical), the missing-share change, and the shares of unseen
categories and out-of-range values, with a verdict against `DriftThresholds`. Servers keep a
`SlidingWindow` of the same counts; Spark computes them with aggregations.

Example:
    >>> report = Bundle.load("models/churn").drift("s3://bucket/today.parquet")
    >>> print(report)                      # a table, worst feature first
    >>> report.has_drift, report.drifted[0].name
"""

from .accumulator import DriftAccumulator, SlidingWindow
from .profiling import MAX_PROFILE_ROWS, RowSampler, build_profile
from .report import DriftReport, DriftThresholds, FeatureDrift

__all__ = [
    "MAX_PROFILE_ROWS",
    "DriftAccumulator",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "RowSampler",
    "SlidingWindow",
    "build_profile",
]
