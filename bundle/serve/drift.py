"""Live drift in the server: a sliding window of what it scored, against the training profile.

After each merged model call the batch worker hands the batch's input (the merged request
columns, as the contract accepted them), the scores and the decoded predictions to
`LiveDrift`, which counts them in ``Bundle.drift_window``'s `SlidingWindow` (counts only,
bounded by its slots). Values are read as ``Bundle.drift`` reads them, so the input is not
coerced a second time. Small batches are held back and counted together, up to `FLUSH_ROWS`
rows or `FLUSH_BATCHES` batches (or at the next report): reading a batch's columns costs
about the same for 1 row as for 256, so one-row requests would otherwise pay it each. The
statistics are computed when asked: by a Prometheus scrape (`DriftCollector`, gauges
labelled by feature) or by ``GET /drift``.

Metrics (one sample per feature, labels ``feature`` and ``role``)::

    bundle_drift_window_rows             rows counted in the window
    bundle_drift_psi                     population stability index
    bundle_drift_ks                      Kolmogorov-Smirnov statistic (numeric features)
    bundle_drift_js                      Jensen-Shannon distance (categorical features)
    bundle_drift_missing_share           share of missing values in the window
    bundle_drift_unseen_share            share of categories training never saw
    bundle_drift_out_of_range_share      share of values outside training's min..max
    bundle_drift_detected                1 when the feature exceeds its thresholds

With several server processes each keeps its own window, and its samples carry a ``pid``
label (windows are counts and could be summed, but their statistics cannot).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily

from ..contract import concat_rows
from .logs import logger

DEFAULT_DRIFT_WINDOW_S = 600.0
DRIFT_SLOTS = 10
FLUSH_ROWS = 256
FLUSH_BATCHES = 64

_GAUGES = (
    ("psi", "bundle_drift_psi", "Population stability index of the feature over the window."),
    ("ks", "bundle_drift_ks", "Kolmogorov-Smirnov statistic of the feature over the window."),
    ("js", "bundle_drift_js", "Jensen-Shannon distance of the feature over the window."),
    ("missing_current", "bundle_drift_missing_share", "Share of missing values in the window."),
    ("unseen_share", "bundle_drift_unseen_share", "Share of values training never saw."),
    (
        "out_of_range_share",
        "bundle_drift_out_of_range_share",
        "Share of values outside the training minimum..maximum.",
    ),
)


class LiveDrift:
    """The server's drift window and how it is reported."""

    def __init__(self, bundle: Any, *, seconds: float = DEFAULT_DRIFT_WINDOW_S):
        self.seconds = float(seconds)
        self.label = bundle.manifest.label
        self.schema = bundle.input_schema
        self.window = bundle.drift_window(seconds=seconds, slots=DRIFT_SLOTS)
        self._failed = False
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, Any, Any, int]] = []
        self._pending_rows = 0

    def observe(self, inputs: Any, scores: Any, predictions: Any, rows: int) -> None:
        """Count one batch the model answered (maybe later, with others); never raises.

        Args:
            inputs: the batch as the bundle accepted it: columns (a dict of lists or
                arrays), a DataFrame, an array, or any raw form (coerced here then).
        """
        with self._lock:
            self._pending.append((inputs, scores, predictions, rows))
            self._pending_rows += rows
            full = self._pending_rows >= FLUSH_ROWS or len(self._pending) >= FLUSH_BATCHES
        if full:
            self.flush()

    def flush(self) -> None:
        """Count the batches held back."""
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        try:
            groups: dict[Any, list[tuple[Any, Any, Any, int]]] = {}
            for inputs, scores, predictions, rows in pending:
                form = _form(inputs)
                if form is None and self.schema is not None:  # an unusual raw form
                    inputs = self.schema.coerce(inputs)
                    form = _form(inputs)
                groups.setdefault(form, []).append((inputs, scores, predictions, rows))
            for items in groups.values():
                inputs = _concat_inputs([item[0] for item in items])
                scores, predictions = (concat_rows([item[i] for item in items]) for i in (1, 2))
                self.window.observe(inputs, scores, predictions)
        except Exception:  # a drift bug must not cost answers: log it once
            if not self._failed:
                self._failed = True
                logger.warning("live drift could not count a batch", exc_info=True)

    def report(self) -> Any:
        """The window's `DriftReport`, computed now from its counts (a few milliseconds)."""
        self.flush()
        return self.window.report(label=self.label)

    def to_dict(self) -> dict[str, Any]:
        """What ``GET /drift`` answers: the window's report as JSON-ready data."""
        data = self.report().to_dict()
        for feature in data["features"]:  # plots are for the HTML report, not for polling
            for key in ("bins", "training", "current"):
                feature.pop(key, None)
        return {"window_seconds": self.seconds, **data}


def _concat_inputs(parts: list[Any]) -> Any:
    """Batches of one form as one: request columns (lists) are joined as lists, which is
    much cheaper than making an array of each one-row list first."""
    first = parts[0]
    if len(parts) == 1 or not isinstance(first, Mapping):
        return concat_rows(parts)
    joined = {}
    for key, value in first.items():
        if isinstance(value, list):
            joined[key] = [item for part in parts for item in part[key]]
        else:
            joined[key] = concat_rows([part[key] for part in parts])
    return joined


def _form(inputs: Any) -> Any:
    """How a batch's input is laid out (batches of one form are counted together), or None
    for a form drift does not read directly (records, positional rows: coerced first)."""
    if isinstance(inputs, Mapping):
        for value in inputs.values():
            if not isinstance(value, (list, np.ndarray)) and not hasattr(value, "iloc"):
                return None
        return tuple(inputs)
    if isinstance(inputs, np.ndarray):
        return "array"
    return "frame" if hasattr(inputs, "iloc") else None


class DriftCollector:
    """A Prometheus collector that reports the drift window at each scrape."""

    def __init__(self, live: LiveDrift, *, per_process: bool = False):
        self.live = live
        self.per_process = per_process

    def describe(self) -> list[Any]:
        return []  # computed at collect time; no describe-time work

    def collect(self) -> Iterator[Any]:
        extra = ["pid"] if self.per_process else []
        tail = [str(os.getpid())] if self.per_process else []
        report = self.live.report()
        rows = GaugeMetricFamily(
            "bundle_drift_window_rows",
            f"Rows counted in the drift window (the last {self.live.seconds:g} s).",
            labels=extra,
        )
        rows.add_metric(tail, report.rows)
        yield rows
        for attribute, name, text in _GAUGES:
            family = GaugeMetricFamily(name, text, labels=["feature", "role", *extra])
            for feature in report.features:
                value = getattr(feature, attribute)
                if value is not None:
                    family.add_metric([feature.name, feature.role, *tail], float(value))
            yield family
        detected = GaugeMetricFamily(
            "bundle_drift_detected",
            "1 when the feature exceeds its drift thresholds over the window, else 0.",
            labels=["feature", "role", *extra],
        )
        for feature in report.features:
            detected.add_metric([feature.name, feature.role, *tail], float(feature.drifted))
        yield detected
