"""The drift report: per-feature statistics, a verdict against thresholds, table and JSON.

A feature drifts when any of its statistics exceeds its threshold; its *severity* is the
largest ratio of statistic to threshold. The report lists the drifted inputs first, then
the drifted outputs (which a moved input drags along), then the rest, each by severity, so
the worst input comes first. With fewer than ``min_rows`` current values a statistic is noisy, so
there it counts only when its shift is also significant at ``significance`` (the KS test,
the chi-square test, or a binomial test of a share): a unit changed in 40 rows is found,
40 rows of the training distribution raise nothing. The report drifts when any feature
does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from bundle.errors import UsageError

from . import statistics as stats
from .accumulator import CategoricalCounts, DriftAccumulator, NumericCounts

DISPLAY_BINS = 24  # numeric histograms drawn in the HTML report
DISPLAY_CATEGORIES = 12

__all__ = ["DriftReport", "DriftThresholds", "FeatureDrift", "build_report"]


@dataclass(frozen=True)
class DriftThresholds:
    """The limits above which a feature counts as drifted (set any to None to ignore it).

    Attributes:
        psi: population stability index (0.1 moderate, 0.2 significant: the usual reading).
        ks: Kolmogorov-Smirnov statistic, numeric features.
        js: Jensen-Shannon distance (base 2), categorical features.
        missing: absolute change of the missing-value share (0.05 = 5 points).
        unseen: share of values training never saw, categorical features.
        out_of_range: share of values outside the training minimum..maximum, numeric.
        min_rows: from this many current values on, a statistic over its threshold
            flags the feature; below it, only when the shift is also significant.
        significance: the p-value below which a shift in fewer than `min_rows` values is
            significant (KS test for numbers, chi-square for categories, a one-sided
            binomial test for the missing, unseen and out-of-range shares).
    """

    psi: float | None = 0.2
    ks: float | None = 0.1
    js: float | None = 0.1
    missing: float | None = 0.05
    unseen: float | None = 0.05
    out_of_range: float | None = 0.05
    min_rows: int = 100
    significance: float = 0.01

    def __post_init__(self) -> None:
        """Raises `UsageError` for a negative or non-numeric threshold."""
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise UsageError(
                    f"Drift threshold {item.name} must be a non-negative number or None; "
                    f"got {value!r}."
                )

    @classmethod
    def of(cls, value: DriftThresholds | Mapping[str, Any] | None) -> DriftThresholds:
        """Thresholds from an instance, a dict of overrides, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, DriftThresholds):
            return value
        unknown = sorted(set(value) - {item.name for item in fields(cls)})
        if unknown:
            known = ", ".join(item.name for item in fields(cls))
            raise UsageError(f"Unknown drift threshold(s) {unknown}; known: {known}.")
        return replace(cls(), **dict(value))


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature: its statistics, the verdict, and both distributions.

    Statistics are None when they do not apply (KS for categories) or cannot be computed
    (no current values). `bins`, `training` and `current` are the drawn distributions
    (shares per bin, missing values in the last bin).
    """

    name: str
    role: str
    kind: str
    rows: int
    missing_training: float
    missing_current: float | None
    psi: float | None = None
    ks: float | None = None
    js: float | None = None
    chi_square: float | None = None
    chi_square_p: float | None = None
    unseen_share: float | None = None
    out_of_range_share: float | None = None
    unseen_values: list[tuple[str, float]] = field(default_factory=list)
    drifted: bool = False
    severity: float = 0.0
    reasons: list[str] = field(default_factory=list)
    enough_rows: bool = True
    bins: list[str] = field(default_factory=list)
    training: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)

    @property
    def missing_change(self) -> float | None:
        if self.missing_current is None:
            return None
        return self.missing_current - self.missing_training

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["missing_change"] = self.missing_change
        data["unseen_values"] = [{"value": v, "share": s} for v, s in self.unseen_values]
        return data


@dataclass(frozen=True)
class DriftReport:
    """Drift of current data against a bundle's training profile.

    Truthy when nothing drifted (like ``VerifyReport``): ``if not report: alert()``.
    """

    label: str
    rows: int
    thresholds: DriftThresholds
    features: list[FeatureDrift]
    training_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[FeatureDrift]:
        """The drifted features, worst first."""
        return [feature for feature in self.features if feature.drifted]

    @property
    def has_drift(self) -> bool:
        return bool(self.drifted)

    def __bool__(self) -> bool:
        return not self.has_drift

    def __getitem__(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(
            f"No feature {name!r} in the report; features: {[f.name for f in self.features]}."
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``bundle drift --json``)."""
        return {
            "bundle": self.label,
            "rows": self.rows,
            "training_rows": self.training_rows,
            "drift": self.has_drift,
            "drifted_features": [feature.name for feature in self.drifted],
            "thresholds": asdict(self.thresholds),
            "notes": list(self.notes),
            "features": [feature.to_dict() for feature in self.features],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(_finite(self.to_dict()), **{"indent": 2, **kwargs})

    def to_html(self) -> str:
        """A self-contained HTML page: summary table and both distributions per feature."""
        from .html import render_html

        return render_html(self)

    def __str__(self) -> str:
        return render_table(self)


def _finite(data: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


# --------------------------------------------------------------------------- building


def build_report(
    accumulator: DriftAccumulator, thresholds: Any = None, *, label: str | None = None
) -> DriftReport:
    """The report of an accumulator's counts against its profile."""
    limits = DriftThresholds.of(thresholds)
    features = []
    for counts in accumulator.counts.values():
        if isinstance(counts, NumericCounts):
            features.append(_numeric_drift(counts, limits))
        else:
            features.append(_categorical_drift(counts, limits))
    # Drifted inputs first: a moved input drags the outputs along, often further (saturated
    # scores), and the input is what to look at. Then drifted outputs, then the rest.
    features.sort(
        key=lambda f: (
            not f.drifted,
            f.drifted and f.role != "input",
            -f.severity,
            f.role != "input",
            f.name,
        )
    )
    notes = []
    if accumulator.refused_rows:
        first = (accumulator.refusal or "").split("\n")[0]
        notes.append(
            f"{accumulator.refused_rows:,} of {accumulator.rows:,} rows could not be scored "
            f"(the input contract refused their batch: {first}); the output distributions "
            "cover the other rows. Input drift counts every row."
        )
    return DriftReport(
        label=label or "the bundle",
        rows=accumulator.rows,
        thresholds=limits,
        features=features,
        training_rows=accumulator.profile.rows,
        notes=notes,
    )


def _verdict(
    values: Mapping[str, float | None],
    limits: DriftThresholds,
    enough: bool,
    p_values: Mapping[str, float | None],
) -> tuple[bool, float, list[str], bool]:
    """``(drifted, severity, reasons, decided)`` from the statistics and their p-values.

    A statistic over its threshold counts when there are enough rows, or when its p-value is
    below ``limits.significance``; `decided` is False when one was over but could not count.
    """
    severity, reasons, undecided = 0.0, [], False
    for metric, value in values.items():
        limit = getattr(limits, metric)
        if value is None or limit is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value <= limit:
            continue
        p_value = p_values.get(metric)
        if not enough and (p_value is None or p_value >= limits.significance):
            undecided = True
            continue
        ratio = value / limit if limit > 0 else math.inf
        severity = max(severity, ratio)
        reason = f"{metric} {value:.3g} > {limit:g}"
        if not enough:
            reason += f" (p={p_value:.2g} with {limits.min_rows - 1:,} rows or fewer)"
        reasons.append(reason)
    return bool(reasons), severity, reasons, not undecided


def _missing_p(counts: NumericCounts | CategoricalCounts, limits: DriftThresholds) -> float | None:
    """The binomial p-value of the current missing count moving past training's share by more
    than the threshold, up or down."""
    if limits.missing is None or not counts.total:
        return None
    training = counts.profile.missing_rate
    if counts.missing / counts.total >= training:
        return stats.share_p_value(counts.missing, counts.total, training + limits.missing)
    return stats.share_p_value(counts.missing, counts.total, training - limits.missing, below=True)


def _missing(counts: NumericCounts | CategoricalCounts) -> tuple[float, float | None]:
    profile = counts.profile
    current = counts.missing / counts.total if counts.total else None
    return profile.missing_rate, current


def _numeric_drift(counts: NumericCounts, limits: DriftThresholds) -> FeatureDrift:
    profile = counts.profile
    missing_training, missing_current = _missing(counts)
    present = counts.present
    psi = ks = oor = None
    if present and len(profile.reference):
        psi = stats.psi(np.asarray(profile.histogram), counts.counts_between(profile.edges))
        below, at_or_below = counts.at_reference()
        ks = stats.ks_statistic(profile.reference_counts, below, at_or_below, present)
        low, high = counts.out_of_range()
        oor = (low + high) / present
    change = None if missing_current is None else abs(missing_current - missing_training)
    enough = counts.total >= limits.min_rows
    ks_p = oor_p = None
    if ks is not None:
        ks_p = stats.ks_p_value(ks, present, int(np.sum(profile.reference_counts)))
    if oor is not None and limits.out_of_range is not None:
        oor_p = stats.share_p_value(low + high, present, limits.out_of_range)
    p_values = {
        "psi": ks_p,
        "ks": ks_p,
        "out_of_range": oor_p,
        "missing": _missing_p(counts, limits),
    }
    drifted, severity, reasons, decided = _verdict(
        {"psi": psi, "ks": ks, "out_of_range": oor, "missing": change}, limits, enough, p_values
    )
    bins, training, current = _numeric_display(counts)
    return FeatureDrift(
        name=profile.name,
        role=profile.role,
        kind=profile.kind,
        rows=counts.total,
        missing_training=missing_training,
        missing_current=missing_current,
        psi=psi,
        ks=ks,
        out_of_range_share=oor,
        drifted=drifted,
        severity=severity,
        reasons=reasons,
        enough_rows=enough or decided,
        bins=bins,
        training=training,
        current=current,
    )


def _display_edges(reference: np.ndarray) -> np.ndarray:
    """About `DISPLAY_BINS` equal-width edges between min and max, snapped to reference
    values (so current counts between them are exact)."""
    if len(reference) <= DISPLAY_BINS:
        return reference[1:]
    grid = np.linspace(reference[0], reference[-1], DISPLAY_BINS + 1)[1:-1]
    positions = np.clip(np.searchsorted(reference, grid), 1, len(reference) - 1)
    return np.unique(reference[positions])


def _numeric_display(counts: NumericCounts) -> tuple[list[str], list[float], list[float]]:
    profile = counts.profile
    reference = profile.reference
    if not len(reference):
        return ["(missing)"], [1.0 if profile.count else 0.0], [1.0 if counts.total else 0.0]
    edges = _display_edges(reference)
    weights = profile.reference_counts
    inner = np.searchsorted(reference, edges)
    cumulative = np.concatenate([[0], np.cumsum(weights)])
    train_bins = np.diff(np.concatenate([[0], cumulative[inner], [weights.sum()]]))
    current_bins = counts.counts_between(edges)
    low, high = counts.out_of_range()
    current_bins = current_bins.astype(np.float64)
    current_bins[0] -= low
    current_bins[-1] -= high
    bounds = [reference[0], *edges, reference[-1]]
    labels = [f"[{_short(bounds[i])}, {_short(bounds[i + 1])})" for i in range(len(bounds) - 1)]
    labels[-1] = labels[-1][:-1] + "]"
    train_present = 1 - profile.missing_rate
    train_shares = list(stats.shares(train_bins) * train_present)
    total = counts.total
    current_shares = [c / total if total else 0.0 for c in current_bins]
    if low or high:
        labels = [f"< {_short(reference[0])}", *labels, f"> {_short(reference[-1])}"]
        train_shares = [0.0, *train_shares, 0.0]
        current_shares = [low / total, *current_shares, high / total]
    labels.append("(missing)")
    train_shares.append(profile.missing_rate)
    current_shares.append(counts.missing / total if total else 0.0)
    return labels, [float(v) for v in train_shares], [float(v) for v in current_shares]


def _short(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.2e}"


def _categorical_drift(counts: CategoricalCounts, limits: DriftThresholds) -> FeatureDrift:
    profile = counts.profile
    missing_training, missing_current = _missing(counts)
    training = np.array([*profile.category_counts, profile.other, 0], dtype=np.float64)
    current = np.array([*counts.counts, counts.other, counts.unseen], dtype=np.float64)
    present = counts.present
    psi = js = chi = chi_p = unseen = None
    if present:
        psi = stats.psi(training, current)
        js = stats.js_distance(training, current)
        result = stats.chi_square(training[:-1], current[:-1])
        if result is not None:
            chi, chi_p = result
        if profile.seen is not None:
            unseen = counts.unseen / present
    change = None if missing_current is None else abs(missing_current - missing_training)
    enough = counts.total >= limits.min_rows
    unseen_p = None
    if unseen is not None and limits.unseen is not None:
        unseen_p = stats.share_p_value(counts.unseen, present, limits.unseen)
    p_values = {
        "psi": chi_p,
        "js": chi_p,
        "unseen": unseen_p,
        "missing": _missing_p(counts, limits),
    }
    drifted, severity, reasons, decided = _verdict(
        {"psi": psi, "js": js, "unseen": unseen, "missing": change}, limits, enough, p_values
    )
    top_unseen = [(value, n / present) for value, n in counts.unseen_values.most_common(5)]
    bins, train_shares, current_shares = _categorical_display(counts)
    return FeatureDrift(
        name=profile.name,
        role=profile.role,
        kind=profile.kind,
        rows=counts.total,
        missing_training=missing_training,
        missing_current=missing_current,
        psi=psi,
        js=js,
        chi_square=chi,
        chi_square_p=chi_p,
        unseen_share=unseen,
        unseen_values=top_unseen,
        drifted=drifted,
        severity=severity,
        reasons=reasons,
        enough_rows=enough or decided,
        bins=bins,
        training=train_shares,
        current=current_shares,
    )


def _categorical_display(counts: CategoricalCounts) -> tuple[list[str], list[float], list[float]]:
    profile = counts.profile
    total_train = max(profile.count, 1)
    total = max(counts.total, 1)
    names = list(profile.categories or ())
    shown = names[:DISPLAY_CATEGORIES]
    rest_train = sum(profile.category_counts[len(shown) :]) + profile.other
    rest_current = int(counts.counts[len(shown) :].sum()) + counts.other
    bins = [*shown, "(other)", "(unseen)", "(missing)"]
    training = [
        *(c / total_train for c in profile.category_counts[: len(shown)]),
        rest_train / total_train,
        0.0,
        profile.missing / total_train,
    ]
    current = [
        *(int(c) / total for c in counts.counts[: len(shown)]),
        rest_current / total,
        counts.unseen / total,
        counts.missing / total,
    ]
    return bins, [float(v) for v in training], [float(v) for v in current]


# --------------------------------------------------------------------------- terminal


def _cell(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def render_table(report: DriftReport) -> str:
    """The report as a terminal table, worst feature first."""
    header = ("feature", "role", "kind", "rows", "PSI", "KS", "JS", "missing Δ", "unseen",
              "out of range", "status")  # fmt: skip
    rows = []
    for f in report.features:
        status = "DRIFT" if f.drifted else ("too few rows" if not f.enough_rows else "ok")
        change = f.missing_change
        rows.append(
            (
                f.name,
                f.role,
                f.kind,
                f"{f.rows:,}",
                _cell(f.psi),
                _cell(f.ks),
                _cell(f.js),
                "-" if change is None else f"{change:+.1%}",
                _cell(f.unseen_share, "{:.1%}"),
                _cell(f.out_of_range_share, "{:.1%}"),
                status,
            )
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5, 6, 7, 8, 9}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    drifted = report.drifted
    verdict = (
        f"DRIFT in {len(drifted)} of {len(report.features)} features: "
        + ", ".join(f.name for f in drifted[:5])
        + (f", ... ({len(drifted) - 5} more)" if len(drifted) > 5 else "")
        if drifted
        else f"No drift in {len(report.features)} features"
    )
    lines = [
        f"Drift of {report.rows:,} rows against the training profile of {report.label} "
        f"({report.training_rows:,} rows)",
        line(header),
        *(line(row) for row in rows),
        verdict + ".",
    ]
    for f in drifted[:5]:
        lines.append(f"- {f.name}: " + "; ".join(f.reasons))
    lines += [f"Note: {note}" for note in report.notes]
    for f in report.features:
        if f.unseen_values:
            shown = ", ".join(f"{value!r} {share:.1%}" for value, share in f.unseen_values)
            lines.append(f"Unseen values of {f.name}: {shown}")
    return "\n".join(lines)


def no_profile_error(label: str) -> UsageError:
    return UsageError(
        f"{label.capitalize()} has no training profile, so there is nothing to compare "
        "against: it was saved by a keras-bundle without profiles, or without an input "
        "example.\nSave it again with an input example or "
        "Bundle(...).save(root, profile_data=training_frame)."
    )
