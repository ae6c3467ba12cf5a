"""The server's logs: JSON lines on stderr, for uvicorn and the server alike.

Access lines (one per request) are written by a background thread (`BackgroundStreamHandler`):
formatting JSON and writing to a pipe cost the event loop tens of microseconds a request,
and a slow reader of stderr would stall it. Everything else is written at once, so nothing
the server says before it exits is lost.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

logger = logging.getLogger("bundle.serve")
access_logger = logging.getLogger("bundle.serve.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class BackgroundStreamHandler(logging.handlers.QueueHandler):
    """A stream handler whose formatting and writing happen in a thread of its own.

    The caller only puts the record on a queue. Records are formatted and written to
    `stream` (stderr) in order by a `QueueListener`; `flush` waits (a little) until the
    queue is drained, as on shutdown.
    """

    def __init__(self, stream: Any = None, capacity: int = 100_000):
        self._target = logging.StreamHandler(stream or sys.stderr)
        # Bounded: past `capacity` waiting lines, new ones are dropped rather than memory
        # growing without limit behind a reader that stopped reading.
        super().__init__(queue.Queue(capacity))
        self._listener = logging.handlers.QueueListener(
            self.queue, self._target, respect_handler_level=False
        )
        self._lock_start = threading.Lock()
        self._started = False
        self.dropped = 0

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        self._target.setFormatter(fmt)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatted by the listener's thread, not the caller's

    def enqueue(self, record: logging.LogRecord) -> None:
        if not self._started:
            with self._lock_start:
                if not self._started:
                    self._listener.start()
                    self._started = True
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        self._target.flush()

    def close(self) -> None:
        if self._started:
            self._listener.stop()  # writes what is queued, then ends the thread
            self._started = False
        self._target.close()
        super().close()


def flush_access_log() -> None:
    """Write out the access lines still queued (the server is about to stop)."""
    for handler in logging.getLogger("bundle.serve.access").handlers:
        handler.flush()


def log_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: JSON lines on stderr for uvicorn and the server."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "access": {"()": BackgroundStreamHandler, "formatter": "json"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "bundle.serve": {"handlers": ["stderr"], "level": level, "propagate": False},
            "bundle.serve.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }
