"""Live drift in the server: a sliding window of what it scored, against the training profile.

After each merged model call the batch worker hands the batch's input (the merged request
columns, as the contract accepted them), the scores and the decoded predictions to
`LiveDrift`, which counts them in ``Bundle.drift_window``'s `SlidingWindow` (counts only,
bounded by its slots). Values are read as ``Bundle.drift`` reads them, so the input is not
coerced a second time.

Counting is off the request path: batches are held and handed, `FLUSH_ROWS` rows or
`FLUSH_BATCHES` batches at a time, to one counting thread, so no answer waits for it. Reading
a batch's columns costs about the same for 1 row as for hundreds, and counting 2,048 rows
together costs half as much per row as counting 256 (benchmarks/RESULTS.md). The backlog is
bounded: when the counting thread is `MAX_BACKLOG_ROWS` behind, further rows are not counted
but tallied (``uncounted_rows``, ``bundle_drift_uncounted_rows_total``), so an overloaded
server answers at full speed and says how much of its traffic the window saw. The
statistics are computed when asked: by a Prometheus scrape (`DriftCollector`, gauges
labelled by feature) or by ``GET /drift``; both count what is held first.

Metrics (one sample per feature, labels ``feature`` and ``role``)::

    bundle_drift_window_rows             rows counted in the window
    bundle_drift_psi                     population stability index
    bundle_drift_ks                      Kolmogorov-Smirnov statistic (numeric features)
    bundle_drift_js                      Jensen-Shannon distance (categorical features)
    bundle_drift_missing_share           share of missing values in the window
    bundle_drift_unseen_share            share of categories training never saw
    bundle_drift_out_of_range_share      share of values outside training's min..max
    bundle_drift_detected                1 when the feature exceeds its thresholds
    bundle_drift_uncounted_rows_total    rows served but not counted (the counter fell behind)

With several server processes each keeps its own window, and its samples carry a ``pid``
label (windows are counts and could be summed, but their statistics cannot).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..contract import concat_rows
from .logs import logger

DEFAULT_DRIFT_WINDOW_S = 600.0
DRIFT_SLOTS = 10
FLUSH_ROWS = 2048
FLUSH_BATCHES = 256
MAX_BACKLOG_ROWS = 65_536  # held for the counting thread; beyond, rows go uncounted

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
        self.uncounted_rows = 0
        self._failed = False
        self._lock = threading.Lock()  # guards what is held and queued
        self._counting = threading.Lock()  # one counter at a time: the thread or a report
        self._ready = threading.Condition(self._lock)
        self._held: list[tuple[Any, Any, Any, int]] = []
        self._held_rows = 0
        self._queue: deque[list[tuple[Any, Any, Any, int]]] = deque()
        self._backlog_rows = 0  # held + queued + being counted
        self._thread: threading.Thread | None = None

    def observe(self, inputs: Any, scores: Any, predictions: Any, rows: int) -> None:
        """Hold one batch the model answered, to be counted off the request path; never raises.

        Args:
            inputs: the batch as the bundle accepted it: columns (a dict of lists or
                arrays), a DataFrame, an array, or any raw form (coerced when counted).
        """
        with self._lock:
            if self._backlog_rows + rows > MAX_BACKLOG_ROWS:
                self.uncounted_rows += rows
                return
            self._held.append((inputs, scores, predictions, rows))
            self._held_rows += rows
            self._backlog_rows += rows
            if self._held_rows < FLUSH_ROWS and len(self._held) < FLUSH_BATCHES:
                return
            self._queue.append(self._held)
            self._held, self._held_rows = [], 0
            if self._thread is None or not self._thread.is_alive():  # started after any fork
                self._thread = threading.Thread(
                    target=self._run, name="bundle-drift-counter", daemon=True
                )
                self._thread.start()
            self._ready.notify()

    def flush(self) -> None:
        """Count everything held or queued now, in this thread."""
        with self._counting:
            with self._lock:
                batches = [item for part in self._queue for item in part] + self._held
                self._queue.clear()
                self._held, self._held_rows = [], 0
            self._count(batches)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._ready.wait()
            with self._counting:
                with self._lock:
                    batches = self._queue.popleft() if self._queue else []
                self._count(batches)

    def _count(self, pending: list[tuple[Any, Any, Any, int]]) -> None:
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
        finally:
            with self._lock:
                self._backlog_rows -= sum(item[3] for item in pending)

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
        return {"window_seconds": self.seconds, "uncounted_rows": self.uncounted_rows, **data}


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
        uncounted = CounterMetricFamily(
            "bundle_drift_uncounted_rows",
            "Rows served but not counted in the drift window (the counter fell behind).",
            labels=extra,
        )
        uncounted.add_metric(tail, self.live.uncounted_rows)
        yield uncounted
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
