"""Dynamic batching for the server: merge concurrent requests into one model call.

Requests queue as payloads; one consumer task takes them in arrival order: it waits at most
`max_wait_ms` after the oldest queued request for more, but only while requests are on their
way (``arriving``: being read or parsed; a lone request runs at once), takes requests until
`max_batch_size` rows, and hands the whole batch to ``process`` in a worker thread
(TensorFlow releases the GIL while the model runs, pandas and scikit-learn mostly do not,
so the event loop keeps parsing requests meanwhile). ``process`` returns one outcome per
request, a result or an exception, so each request gets exactly its own answer.

While a batch runs, the next requests queue up; when it finishes they are taken at once
(their wait is already over), so under load batches grow by themselves and at low load a
request waits at most `max_wait_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchStats", "DynamicBatcher", "Overloaded"]

Process = Callable[[list[Any], bool], list[Any]]
"""``process(payloads, with_scores) -> [result or exception, one per payload]``, in a thread."""


class Overloaded(Exception):
    """The queue holds more rows than the server accepts; the request was not queued."""


@dataclass(frozen=True)
class BatchStats:
    """What one model call did, for metrics."""

    rows: int
    requests: int
    seconds: float
    failed: bool


@dataclass
class _Job:
    payload: Any
    rows: int
    with_scores: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Merge concurrent requests into model calls of up to `max_batch_size` rows.

    Args:
        process: run in a worker thread on the payloads of one batch; returns one outcome
            per payload, in order: its result, or the exception that is its answer.
        max_batch_size: rows per model call; a larger request runs alone, never split.
        max_wait_ms: how long the oldest queued request may wait for others to join it.
        max_queue_rows: rows waiting at most; `submit` raises `Overloaded` beyond that.
        on_batch: called (from the worker thread) with the `BatchStats` of each model call.
        arriving: how many requests are on their way (being read or parsed); the batcher
            waits (up to `max_wait_ms`) only while some are. Default: always wait.

    Create it inside the running event loop (`start`), and `stop` it in the same loop.
    """

    def __init__(
        self,
        process: Process,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_rows: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        arriving: Callable[[], int] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1 row; got {max_batch_size}.")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more; got {max_wait_ms}.")
        self._process = process
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue_rows = int(max_queue_rows)
        self._on_batch = on_batch
        self._arriving = arriving or (lambda: 1)
        self._pending: deque[_Job] = deque()
        self._pending_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._idle: asyncio.Event | None = None
        # One thread: batches run one after another, and while one runs the event loop
        # thread validates the next requests and the queue fills the next batch.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-predict")

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def queued(self) -> tuple[int, int]:
        """``(requests, rows)`` waiting for a model call (not the batch running now)."""
        return len(self._pending), self._pending_rows

    def start(self) -> None:
        """Start the consumer task in the running event loop (idempotent).

        A host that runs each request in a new event loop (some test clients) gets a new
        consumer in each loop: a task of a closed loop never runs again.
        """
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._pending.clear()
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = loop.create_task(self._consume())

    async def stop(self) -> None:
        """Finish every queued request, then stop the consumer and the worker thread."""
        if self._task is None:
            return
        while self._pending or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0.001)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, payload: Any, rows: int, *, with_scores: bool = False) -> Any:
        """Queue one request (`rows` of them, for the batch limits); return its outcome.

        Raises:
            Overloaded: the queue already holds `max_queue_rows` rows.
            Exception: the exception `process` gave as this request's outcome.
        """
        self.start()
        if self._pending and self._pending_rows + rows > self.max_queue_rows:
            raise Overloaded(
                f"The server is overloaded: {self._pending_rows:,} rows are waiting "
                f"(at most {self.max_queue_rows:,}). Retry later."
            )
        job = _Job(payload, rows, with_scores, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._pending_rows += rows
        self._wakeup.set()
        return await job.future

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            if not batch:
                continue
            self._idle.clear()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._compute, batch)
            except Exception as exc:  # the executor itself failed; answer every request
                outcomes = [exc] * len(batch)
            finally:
                self._idle.set()
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    async def _collect(self) -> list[_Job]:
        """Take requests for one batch: up to max_batch_size rows or max_wait after the first."""
        loop_time = time.monotonic
        batch: list[_Job] = []
        rows = 0
        deadline = self._pending[0].enqueued + self.max_wait
        while rows < self.max_batch_size:
            if self._pending:
                job = self._pending[0]
                if batch and rows + job.rows > self.max_batch_size:
                    break
                self._pending.popleft()
                self._pending_rows -= job.rows
                if job.future.done():  # cancelled while queued
                    continue
                batch.append(job)
                rows += job.rows
                continue
            timeout = deadline - loop_time()
            # Wait only for requests already on their way: with none, waiting adds latency
            # and no company (a lone request runs at once).
            if timeout <= 0 or not batch or not self._arriving():
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                break
        return batch

    # ------------------------------------------------------------------ worker thread
    def _compute(self, batch: list[_Job]) -> list[Any]:
        started = time.perf_counter()
        with_scores = any(job.with_scores for job in batch)
        try:
            outcomes = self._process([job.payload for job in batch], with_scores)
            if len(outcomes) != len(batch):
                raise RuntimeError(
                    f"process() gave {len(outcomes)} outcomes for a batch of {len(batch)}"
                )
        except Exception as exc:
            outcomes = [exc] * len(batch)
        if self._on_batch is not None:
            failed = any(isinstance(outcome, BaseException) for outcome in outcomes)
            rows = sum(job.rows for job in batch)
            self._on_batch(BatchStats(rows, len(batch), time.perf_counter() - started, failed))
        return outcomes
