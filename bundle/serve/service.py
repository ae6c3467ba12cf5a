"""One served bundle behind a dynamic batcher: what every transport (REST, gRPC) calls."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from bundle import SchemaError, StepError

from ..contract import concat_rows, slice_rows
from .batching import DynamicBatcher, Overloaded
from .drift import LiveDrift
from .logs import flush_access_log, logger
from .metrics import Metrics
from .protocol import RequestError
from .served import Served
from .tuning import settle

DEFAULT_MAX_BATCH_SIZE = 256  # rows per model call
DEFAULT_MAX_WAIT_MS = 2.0  # how long an idle server waits for a request to get company
DEFAULT_MAX_QUEUE_ROWS = 65_536  # rows waiting before new requests get 503
DEFAULT_MAX_BODY_BYTES = 64 << 20


@dataclass(frozen=True)
class _Payload:
    """One request's input, checked for form only; the batch worker coerces it.

    Requests whose `key` is equal (same columns, same kinds of values, same strictness) are
    coerced together in one ``coerce`` call; a request with no key is coerced alone.
    """

    raw: Any
    rows: int
    strict: bool
    key: tuple | None = None


def _signature(values: Any) -> str:
    """The kinds of values in one column of a request: numpy dtype, or Python types."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.dtype.str
    prefix = "O:" if isinstance(values, np.ndarray) else ""
    # None is "missing" in every column and reads the same merged or alone.
    kinds = {type(value).__qualname__ for value in values if value is not None}
    return prefix + ",".join(sorted(kinds))


def _columnar(records: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Records as columns; a key a record lacks is None there (as pandas reads records)."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return {name: [record.get(name) for record in records] for name in names}


def _merge_columns(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Columnar requests (same key) as one columnar input, rows in request order."""
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    for name, first in parts[0].items():
        values = [part[name] for part in parts]
        if isinstance(first, np.ndarray):
            merged[name] = np.concatenate(values)
        else:
            merged[name] = [value for column in values for value in column]
    return merged


def _n_rows(result: Any) -> int:
    if isinstance(result, Mapping):
        return _n_rows(next(iter(result.values()))) if result else 0
    if isinstance(result, (list, tuple)):
        return _n_rows(result[0]) if result else 0
    return len(result)


class Service:
    """Everything one app instance holds: the served bundle, its batcher, its metrics."""

    def __init__(
        self,
        loaded: Any,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_rows: int,
        max_body_bytes: int,
        registry: CollectorRegistry | None,
        drift_window: float | None = None,
        settle_process: bool = False,
    ):
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive; got {max_body_bytes}.")
        self.served = Served.of(loaded)
        self.metrics = Metrics(registry or CollectorRegistry(auto_describe=True))
        self.max_body_bytes = int(max_body_bytes)
        # Requests being read and parsed: the batcher waits for these (only) to join it.
        self.arriving = 0
        self.batcher = DynamicBatcher(
            self._process,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queue_rows=max_queue_rows,
            on_batch=self.metrics.batch,
            arriving=lambda: self.arriving,
        )
        self.drift: LiveDrift | None = None
        if drift_window and getattr(loaded, "profile", None) is not None:
            self.drift = LiveDrift(loaded, seconds=drift_window)
            self.metrics.watch_drift(self.drift)
        self.ready = False
        self._settle = settle_process
        self._warm_lock: asyncio.Lock | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ requests -> payloads
    def payload(self, raw: Any, *, strict: bool) -> _Payload:
        """Wrap one request's raw input (records, columns, tensors) for the batcher."""
        tabular = (self.served.schema_dict or {}).get("kind") == "tabular"
        columns = None
        if tabular and isinstance(raw, list) and raw and all(isinstance(r, Mapping) for r in raw):
            columns = _columnar(raw)
        elif tabular and isinstance(raw, Mapping) and raw:
            values = list(raw.values())
            if all(
                isinstance(v, list) or (isinstance(v, np.ndarray) and v.ndim == 1) for v in values
            ):
                columns = dict(raw)
        if columns is not None:
            lengths = {len(values) for values in columns.values()}
            if len(lengths) == 1:
                key = (
                    strict,
                    tuple(sorted((str(name), _signature(v)) for name, v in columns.items())),
                )
                return _Payload(columns, lengths.pop(), strict, key)
        return _Payload(raw, _rough_rows(raw), strict)

    # ------------------------------------------------------------------ worker thread
    def _predict(self, raw: Any, with_scores: bool, strict: bool = False) -> tuple[Any, Any]:
        """One model call: (predictions, scores or None)."""
        loaded = self.served.bundle
        if self.drift is not None and self.ready:  # the warm-up row is not traffic
            scores = loaded.predict(raw, postprocess=False, strict=strict)
            predictions = loaded.decode(scores)
            self.drift.observe(raw, scores, predictions, _n_rows(predictions))
            return predictions, (scores if with_scores else None)
        if with_scores and self.served.has_postprocess:
            scores = loaded.predict(raw, postprocess=False, strict=strict)
            return loaded.decode(scores), scores
        predictions = loaded.predict(raw, strict=strict)
        return predictions, (predictions if with_scores else None)

    def _process(self, payloads: list[_Payload], with_scores: bool) -> list[Any]:
        """Answer one batch: each payload's ``(predictions, scores, rows)`` or its exception."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return self._answer(payloads, with_scores)
            finally:
                self._log_warnings(caught)

    def _answer(self, payloads: list[_Payload], with_scores: bool) -> list[Any]:
        keys = {payload.key for payload in payloads}
        failed_key = None
        if len(keys) == 1 and None not in keys:
            # The common case: one kind of request. Bundle.predict coerces the merged
            # input once; if that input is refused, find out below whose rows it was.
            merged = _merge_columns([payload.raw for payload in payloads])
            try:
                result = self._predict(merged, with_scores, payloads[0].strict)
            except SchemaError:
                failed_key = payloads[0].key
            except Exception as exc:
                if len(payloads) == 1:
                    return [exc]
                return [self._alone(p.raw, with_scores, strict=p.strict) for p in payloads]
            else:
                return self._split(result, [payload.rows for payload in payloads])
        outcomes: list[Any] = [None] * len(payloads)
        parts: list[tuple[list[int], Any, list[int]]] = []  # (payloads, canonical, rows each)
        groups: dict[Any, list[int]] = {}
        for index, payload in enumerate(payloads):
            key = payload.key if payload.key is not None else ("alone", index)
            groups.setdefault(key, []).append(index)
        for key, indexes in groups.items():
            if len(indexes) > 1 and key != failed_key:
                rows = [payloads[i].rows for i in indexes]
                try:
                    merged = _merge_columns([payloads[i].raw for i in indexes])
                    canonical, n_rows = self.served.coerce(
                        merged, strict=payloads[indexes[0]].strict
                    )
                except SchemaError:
                    pass  # someone's rows are bad: coerce them one by one
                else:
                    if n_rows == sum(rows):
                        parts.append((indexes, canonical, rows))
                        continue
            for i in indexes:
                try:
                    canonical, n_rows = self.served.coerce(
                        payloads[i].raw, strict=payloads[i].strict
                    )
                except Exception as exc:
                    outcomes[i] = exc
                else:
                    parts.append(([i], canonical, [n_rows]))
        if not parts:
            return outcomes
        try:
            result = self._predict(
                concat_rows([canonical for _, canonical, _ in parts]), with_scores
            )
        except Exception as exc:
            if len(payloads) == 1:
                return [exc]
            for indexes, canonical, rows in parts:
                start = 0
                for i, n_rows in zip(indexes, rows, strict=True):
                    piece = (
                        canonical
                        if len(indexes) == 1
                        else slice_rows(canonical, start, start + n_rows)
                    )
                    start += n_rows
                    outcomes[i] = self._alone(piece, with_scores, n_rows)
            return outcomes
        order = [i for indexes, _, _ in parts for i in indexes]
        rows = [n for _, _, counts in parts for n in counts]
        for i, outcome in zip(order, self._split(result, rows), strict=True):
            outcomes[i] = outcome
        return outcomes

    def _alone(
        self, raw: Any, with_scores: bool, rows: int | None = None, *, strict: bool = False
    ) -> Any:
        try:
            predictions, scores = self._predict(raw, with_scores, strict)
        except Exception as exc:
            return exc
        return predictions, scores, _n_rows(predictions) if rows is None else rows

    @staticmethod
    def _split(result: tuple[Any, Any], rows: list[int]) -> list[Any]:
        predictions, scores = result
        if _n_rows(predictions) != sum(rows):
            raise RuntimeError(
                f"the batch predicted {_n_rows(predictions)} rows for {sum(rows)} input rows"
            )
        outcomes, start = [], 0
        for n_rows in rows:
            stop = start + n_rows
            pieces = (slice_rows(predictions, start, stop), slice_rows(scores, start, stop))
            outcomes.append((*pieces, n_rows))
            start = stop
        return outcomes

    def _log_warnings(self, caught: list[warnings.WarningMessage]) -> None:
        """Log each distinct warning once (as JSON), not on stderr for every batch."""
        for warning in caught:
            text = f"{warning.category.__name__}: {warning.message}"
            if text in self._warned or len(self._warned) >= 1000:
                continue
            self._warned.add(text)
            logger.warning(
                str(warning.message),
                extra={"fields": {"category": warning.category.__name__}},
            )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the batcher and warm the whole path up once; then the server is ready."""
        if self.ready:
            return
        if self._warm_lock is None:
            self._warm_lock = asyncio.Lock()
        async with self._warm_lock:
            if self.ready:
                return
            self.batcher.start()
            raw = self.served.warm_up_input()
            if raw is not None:
                started = time.perf_counter()
                try:
                    predictions, scores, _ = await self.batcher.submit(
                        self.payload(raw, strict=False), 1, with_scores=True
                    )
                    self.served.learn_outputs(predictions, scores)
                    logger.info(
                        "warmed up",
                        extra={"fields": {"seconds": round(time.perf_counter() - started, 3)}},
                    )
                except Exception:
                    logger.warning(
                        "warm-up on a row made from the input contract failed; serving anyway "
                        "(the first request pays for tracing)",
                        exc_info=True,
                    )
            if self._settle:
                settle()
            self.ready = True
            logger.info(
                "ready",
                extra={
                    "fields": {
                        "model": self.served.name,
                        "version": self.served.version,
                        "max_batch_size": self.batcher.max_batch_size,
                        "max_wait_ms": self.batcher.max_wait * 1000,
                    }
                },
            )

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        flush_access_log()

    def arrival(self) -> Arrival:
        """Count a request as arriving until it reaches the batcher (or fails on the way)."""
        return Arrival(self)

    async def predict(
        self, raw: Any, *, strict: bool, with_scores: bool, arrival: Arrival | None = None
    ) -> tuple[Any, Any, int]:
        """Queue one request; its rows are coerced and predicted with the others of its batch."""
        if not self.ready:
            await self.start()
        payload = self.payload(raw, strict=strict)
        if arrival is not None:
            arrival.release()
        return await self.batcher.submit(payload, payload.rows, with_scores=with_scores)

    # ------------------------------------------------------------------ the protocol
    def check_model(self, name: str, version: str | None) -> Served:
        """The served model if `name` (and `version`, unless None or empty) are its own."""
        served = self.served
        if name != served.name:
            raise RequestError(
                404,
                f"Unknown model {name!r}: this server serves {served.name!r}.",
                kind="not_found",
            )
        if version and version != served.version:
            raise RequestError(
                404,
                f"Unknown version {version!r} of model {name!r}: this server serves version "
                f"{served.version!r}.",
                kind="not_found",
            )
        return served

    def check_outputs(self, names: list[Any]) -> None:
        """Refuse (400) an output name the model does not have."""
        outputs = self.served.outputs
        for name in names:
            if not isinstance(name, str) or name not in outputs:
                raise RequestError(
                    400,
                    f"Unknown output {name!r}; model {self.served.name!r} has outputs "
                    f"{', '.join(map(repr, outputs))}.",
                    kind="request",
                )

    async def infer(
        self, tensors: dict[str, np.ndarray], outputs: list[str], arrival: Arrival | None = None
    ) -> tuple[dict[str, Any], int]:
        """One protocol inference: the named `outputs` (checked) for the input tensors."""
        served = self.served
        with_scores = any(name not in served.default_outputs for name in outputs)
        raw = served.raw_from_tensors(tensors)
        predictions, scores, rows = await self.predict(
            raw, strict=True, with_scores=with_scores, arrival=arrival
        )
        produced = served.produced(predictions, scores)
        return {name: produced[name] for name in outputs}, rows


class Arrival:
    """A request between its first byte and the batcher: `Service.arriving` counts it once."""

    __slots__ = ("_service",)

    def __init__(self, service: Service):
        self._service: Service | None = service
        service.arriving += 1

    def release(self) -> None:
        if self._service is not None:
            self._service.arriving -= 1
            self._service = None

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def client_error(exc: BaseException) -> tuple[int, str] | None:
    """``(HTTP status, error kind)`` when `exc` is the client's fault or an overload, else None.

    Both transports answer with it: REST as the status, gRPC as the matching status code.
    """
    if isinstance(exc, RequestError):
        return exc.status, exc.kind
    if isinstance(exc, SchemaError):
        return 400, "schema"
    if isinstance(exc, StepError):
        return 400, "step"
    if isinstance(exc, Overloaded):
        return 503, "overloaded"
    return None


def _rough_rows(raw: Any) -> int:
    """Rows of a raw input, for the batch limits (exact rows come from coerce)."""
    if isinstance(raw, Mapping):
        return max((_rough_rows(value) for value in raw.values()), default=1)
    if isinstance(raw, np.ndarray):
        return int(raw.shape[0]) if raw.ndim else 1
    return len(raw) if isinstance(raw, (list, tuple)) else 1
