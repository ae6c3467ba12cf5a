"""Drift statistics computed from counts: PSI, Kolmogorov-Smirnov, Jensen-Shannon, chi-square.

Every statistic here takes counts, never raw values, so that a streaming accumulator, a
sliding window in a server and a Spark aggregation all feed the same formulas:

- `psi`: population stability index over the same bins, ``sum((a - e) * ln(a / e))`` with
  shares floored at 1e-4 (the convention of Evidently and most monitoring tools);
- `ks_statistic`: the two-sample Kolmogorov-Smirnov statistic between a weighted reference
  sample and the current data, from how many current values fall below and at each
  reference value. It is exact: equal to ``scipy.stats.ks_2samp(reference, current)``;
- `js_distance`: the Jensen-Shannon distance (base 2, in [0, 1]) between two histograms;
- `chi_square`: Pearson's goodness-of-fit statistic of current counts against the training
  shares, with its p-value;
- `ks_p_value`, `share_p_value`: how surprising a statistic is for the number of rows seen,
  so that a small sample is flagged only when its shift is significant.
"""

from __future__ import annotations

import math

import numpy as np

PSI_FLOOR = 1e-4

__all__ = [
    "PSI_FLOOR",
    "chi_square",
    "js_distance",
    "ks_p_value",
    "ks_statistic",
    "psi",
    "share_p_value",
    "shares",
]


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts as shares of their total (zeros when the total is zero)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def psi(expected: np.ndarray, actual: np.ndarray, *, floor: float = PSI_FLOOR) -> float | None:
    """Population stability index of `actual` counts against `expected` counts, same bins.

    Shares below `floor` are raised to it, so an empty bin on either side contributes a
    large but finite term. None when either side has no counts.
    """
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.sum() <= 0 or actual.sum() <= 0:
        return None
    e = np.maximum(shares(expected), floor)
    a = np.maximum(shares(actual), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(
    reference_counts: np.ndarray, below: np.ndarray, at_or_below: np.ndarray, total: int
) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic from counts at the reference values.

    Args:
        reference_counts: how often each sorted unique reference value occurs.
        below: for each reference value t, how many current values are < t.
        at_or_below: for each reference value t, how many current values are <= t.
        total: how many current values there are.

    Between two consecutive reference values the reference CDF is flat and the current one
    only rises, so the largest gap is at a reference value or just below the next one:
    the counts at and below each reference value give the exact supremum over all x.
    """
    weights = np.asarray(reference_counts, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return None
    reference_cdf = np.cumsum(weights) / weights.sum()
    before = np.concatenate([[0.0], reference_cdf[:-1]])
    at = np.abs(reference_cdf - np.asarray(at_or_below, np.float64) / total)
    just_below = np.abs(before - np.asarray(below, np.float64) / total)
    return float(max(at.max(), just_below.max()))


def js_distance(p_counts: np.ndarray, q_counts: np.ndarray) -> float | None:
    """Jensen-Shannon distance, base 2 (0 identical, 1 disjoint), between two histograms."""
    p, q = np.asarray(p_counts, np.float64), np.asarray(q_counts, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p, q = shares(p), shares(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        inside = a > 0
        return float(np.sum(a[inside] * np.log2(a[inside] / m[inside])))

    divergence = (kl(p) + kl(q)) / 2
    return math.sqrt(max(divergence, 0.0))


def chi_square(expected: np.ndarray, observed: np.ndarray) -> tuple[float, float] | None:
    """Pearson's chi-square of `observed` counts against the shares of `expected` counts.

    Bins with no expected count are left out (the caller reports values training never
    saw separately). Returns ``(statistic, p_value)``, or None without counts or bins.
    """
    expected, observed = np.asarray(expected, np.float64), np.asarray(observed, np.float64)
    keep = expected > 0
    expected, observed = expected[keep], observed[keep]
    if len(expected) < 2 or observed.sum() <= 0:
        return None
    scaled = expected / expected.sum() * observed.sum()
    statistic = float(np.sum((observed - scaled) ** 2 / scaled))
    from scipy.special import chdtrc

    return statistic, float(chdtrc(len(expected) - 1, statistic))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """The asymptotic p-value of a two-sample KS `statistic` between `n` and `m` values.

    The same approximation as ``scipy.stats.ks_2samp(..., method="asymp")``: the one-sample
    distribution at the effective size ``n * m / (n + m)``.
    """
    if n <= 0 or m <= 0:
        return 1.0
    from scipy.stats import kstwo

    return float(kstwo.sf(statistic, max(1, round(n * m / (n + m)))))


def share_p_value(count: int, total: int, share: float, *, below: bool = False) -> float:
    """How likely `count` or more of `total` values (or as few, with `below`) would be if
    the true share were `share`: the one-sided binomial test of "the share moved past it"."""
    if total <= 0:
        return 1.0
    from scipy.stats import binom

    share = min(max(share, 0.0), 1.0)
    if below:
        return float(binom.cdf(count, total, share))
    return float(binom.sf(count - 1, total, share))
