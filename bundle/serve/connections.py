"""Connection limits for the HTTP server: a header and body read timeout, a connection cap.

uvicorn reads a request's headers for as long as the client takes, so a client sending a
byte a second holds its connection (and a file descriptor) forever, and enough of them
starve everyone else. `GuardedHttpToolsProtocol` is uvicorn's httptools protocol with three
limits:

- ``header_timeout``: a request's headers (from its first byte, or from the connection's
  opening) must arrive within this many seconds; otherwise the server answers 408 and
  closes the connection.
- ``body_timeout``: its body must arrive within this many seconds after the headers;
  otherwise the connection is closed (the request is abandoned).
- ``max_connections``: a connection beyond this many open ones is answered 503 and closed
  at once, before it can send anything.

Each is checked by a timer on the event loop, so a slow client costs nothing while it
waits and never delays another client's request.

Example:
    >>> config = uvicorn.Config(app, http=http_protocol(header_timeout=5, max_connections=200))
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .logs import logger

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_MAX_CONNECTIONS = 1000


def _answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a body timeout, a connection cap.

    The limits are class attributes: `http_protocol` makes a subclass with its own, and a
    worker process of ``run(workers=N)`` sets them on this class before it serves.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ the connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning(
                "connection refused: too many open connections",
                extra={"fields": {"connections": len(self.connections) - 1}},
            )
            self._refuse(
                503,
                "Service Unavailable",
                f"The server has {len(self.connections) - 1:,} open connections, its limit. "
                "Retry later, or reuse a connection (keep-alive).",
            )
            return
        # A client that connects and sends nothing is as slow as one that sends a byte a
        # second: both must start a request within the header timeout.
        self._arm(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # ------------------------------------------------------------------ a request
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_timer is None:
            self._arm(self.header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if not self.transport.is_closing():
            self._arm(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # ------------------------------------------------------------------ timers
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _headers_too_slow(self) -> None:
        self._read_timer = None
        logger.info(
            "connection closed: request headers too slow",
            extra={"fields": {"client": _client(self.client), "seconds": self.header_timeout}},
        )
        self._refuse(
            408,
            "Request Timeout",
            f"The request's headers did not arrive within {self.header_timeout:g} s.",
        )

    def _body_too_slow(self) -> None:
        self._read_timer = None
        logger.info(
            "connection closed: request body too slow",
            extra={"fields": {"client": _client(self.client), "seconds": self.body_timeout}},
        )
        # The app is already reading the body: it sees the client disconnect and answers no
        # one. Writing a response here would interleave with one it may be sending.
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_answer(status, reason, message))
            self.transport.close()


def _client(address: tuple[str, int] | None) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None


def http_protocol(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> type[GuardedHttpToolsProtocol]:
    """A uvicorn ``http`` protocol class with these limits, for an app from `create_app`.

    Args:
        header_timeout: seconds a request's headers may take to arrive (answered 408).
        body_timeout: seconds its body may take after the headers (the connection closes).
        max_connections: open connections at most; one more is answered 503 and closed.

    Returns:
        A subclass of `GuardedHttpToolsProtocol`; pass it as ``uvicorn.Config(http=...)``.

    Raises:
        ValueError: a limit is not positive.
    """
    check_limits(header_timeout, body_timeout, max_connections)
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout": float(header_timeout),
            "body_timeout": float(body_timeout),
            "max_connections": int(max_connections),
        },
    )


def check_limits(header_timeout: float, body_timeout: float, max_connections: int) -> None:
    """Raise ValueError naming the first limit that is not positive."""
    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be more than 0 seconds; got {header_timeout}.")
    if not body_timeout > 0:
        raise ValueError(f"body_timeout must be more than 0 seconds; got {body_timeout}.")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1; got {max_connections}.")
