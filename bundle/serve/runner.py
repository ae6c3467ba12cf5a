"""Running the server: `run` (what ``bundle serve`` calls) and its worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn

from bundle import Bundle, BundleError

from .app import create_app
from .connections import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    GuardedHttpToolsProtocol,
    check_limits,
    http_protocol,
)
from .drift import DEFAULT_DRIFT_WINDOW_S
from .grpc import DEFAULT_GRPC_PORT
from .logs import log_config, logger
from .metrics import MULTIPROC_ENV
from .service import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_WAIT_MS

DEFAULT_GRACEFUL_SHUTDOWN_S = 30.0
CONFIG_ENV = "KERAS_BUNDLE_SERVE_CONFIG"
_STARTUP_FAILURE = getattr(uvicorn.config, "STARTUP_FAILURE", 3)


def run(
    location: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    trusted: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    log_level: str = "info",
    timeout_graceful_shutdown: float = DEFAULT_GRACEFUL_SHUTDOWN_S,
    drift_window: float | None = DEFAULT_DRIFT_WINDOW_S,
    grpc_port: int | None = DEFAULT_GRPC_PORT,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> None:
    """Serve the bundle at `location` until SIGINT/SIGTERM (what ``bundle serve`` runs).

    With one worker the bundle is loaded here, before the port opens, so a bundle that cannot
    be loaded raises at once. With ``workers > 1``, uvicorn starts that many processes on
    the same port, each loading the bundle once through an app factory; metrics switch to
    prometheus_client's multiprocess mode so ``/metrics`` sums over all workers.

    The protocol's gRPC service listens on `grpc_port` (same host) in the same process,
    sharing the REST server's batcher; with several workers each listens on it too (the
    kernel spreads connections over them).

    On SIGTERM the server stops accepting connections, finishes the requests in flight (at
    most `timeout_graceful_shutdown` seconds), then exits.

    Args:
        location: a bundle version directory, a root (its highest version), an archive or a
            URL: whatever ``Bundle.load`` accepts.
        host: the interface to listen on (``0.0.0.0`` for all).
        port: the TCP port.
        workers: server processes; each holds its own copy of the model.
        trusted: allow loading parts that execute code (see ``Bundle.load``).
        max_batch_size: rows per merged model call.
        max_wait_ms: how long an idle server waits for a request's batch to fill.
        log_level: ``debug``, ``info``, ``warning`` or ``error``; access logs are ``info``.
        timeout_graceful_shutdown: seconds to finish in-flight requests on shutdown.
        drift_window: seconds of traffic live drift covers; None or 0 turns it off.
        grpc_port: the gRPC port (``inference.GRPCInferenceService``); None serves REST only,
            0 any free port (logged).
        header_timeout: seconds a request's headers may take to arrive; a slower client
            gets 408 and its connection is closed.
        body_timeout: seconds a request's body may take after its headers; a slower client's
            connection is closed.
        max_connections: open HTTP connections at most (per worker); one more gets 503 and
            is closed at once.

    Raises:
        BundleError: the bundle cannot be loaded (not found, tampered, needs trusted=True),
            or the workers could not start.
        ValueError: an argument is out of range.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}.")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1 row; got {max_batch_size}.")
    if max_wait_ms < 0:
        raise ValueError(f"max_wait_ms must be 0 or more; got {max_wait_ms}.")
    if grpc_port is not None and not 0 <= grpc_port <= 65535:
        raise ValueError(f"grpc_port must be a TCP port (0-65535) or None; got {grpc_port}.")
    check_limits(header_timeout, body_timeout, max_connections)
    location = os.fspath(location)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": log_config(log_level),
        "log_level": log_level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": timeout_graceful_shutdown,
        "server_header": False,
    }
    limits = {
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "max_connections": max_connections,
    }
    if workers == 1:
        loaded = Bundle.load(location, trusted=trusted)
        app = create_app(
            loaded,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            drift_window=drift_window,
            grpc_port=grpc_port,
            grpc_host=host,
            settle_process=True,
        )
        uvicorn.run(app, http=http_protocol(**limits), **options)
        return
    work = Path(tempfile.mkdtemp(prefix="keras-bundle-serve-"))
    error_file = work / "worker-error.txt"
    config = {
        "location": location,
        "trusted": trusted,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "drift_window": drift_window,
        "grpc_port": grpc_port,
        "host": host,
        "limits": limits,
        "error_file": str(error_file),
    }
    own_metrics = not os.environ.get(MULTIPROC_ENV)
    if own_metrics:
        (work / "metrics").mkdir()
        os.environ[MULTIPROC_ENV] = str(work / "metrics")
    os.environ[CONFIG_ENV] = json.dumps(config)
    done = threading.Event()

    def stop_when_a_worker_cannot_load() -> None:
        # Recent uvicorn stops on the workers' startup-failure exit code by itself; older
        # releases restart them forever (or wait with none). SIGTERM ends the supervisor
        # either way: it stops the workers and returns.
        while not done.wait(0.2):
            if error_file.exists():
                if not done.is_set():
                    signal.raise_signal(signal.SIGTERM)
                return

    watcher = threading.Thread(target=stop_when_a_worker_cannot_load, daemon=True)
    watcher.start()
    try:
        uvicorn.run(
            "bundle.serve.runner:worker_app",
            factory=True,
            workers=workers,
            # Worker processes import the class by name; worker_app sets its limits.
            http=f"{GuardedHttpToolsProtocol.__module__}:{GuardedHttpToolsProtocol.__name__}",
            **options,
        )
        done.set()
        if error_file.exists():  # the workers stopped the server: they could not load
            raise _worker_error(error_file.read_text(encoding="utf-8"))
    finally:
        done.set()
        os.environ.pop(CONFIG_ENV, None)
        if own_metrics:
            os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(work, ignore_errors=True)


def _worker_error(text: str) -> BundleError:
    """The error a worker could not load with, as its own class when that takes a message.

    The worker's exception does not cross the process boundary; its class name and message
    do, so the caller of `run` catches an `UnsafeLoadError` as it would from `Bundle.load`.
    """
    from .. import errors

    try:
        record = json.loads(text)
        error_class = getattr(errors, record["class"], BundleError)
        message = str(record["message"])
    except (ValueError, KeyError, TypeError):
        return BundleError(text)
    if not (isinstance(error_class, type) and issubclass(error_class, BundleError)):
        error_class = BundleError
    try:
        return error_class(message)
    except TypeError:  # an error class with required attributes: the message still says it
        return BundleError(message)


def worker_app() -> Any:
    """The app factory each uvicorn worker process calls: load the bundle once, serve it."""
    config = json.loads(os.environ[CONFIG_ENV])
    try:
        loaded = Bundle.load(config["location"], trusted=config["trusted"])
    except BundleError as exc:
        logger.error("cannot load the bundle: %s", exc)
        # The first worker to fail tells the parent why (the file exists for the others).
        with (
            contextlib.suppress(FileExistsError),
            open(config["error_file"], "x", encoding="utf-8") as handle,
        ):
            json.dump({"class": type(exc).__name__, "message": str(exc)}, handle)
        # uvicorn's supervisor restarts a worker that died, but stops on this exit code:
        # every restart would fail the same way.
        raise SystemExit(_STARTUP_FAILURE) from exc
    for name, value in config["limits"].items():
        setattr(GuardedHttpToolsProtocol, name, value)
    return create_app(
        loaded,
        max_batch_size=config["max_batch_size"],
        max_wait_ms=config["max_wait_ms"],
        drift_window=config.get("drift_window"),
        grpc_port=config["grpc_port"],
        grpc_host=config["host"],
        grpc_reuse_port=True,
        settle_process=True,
    )
