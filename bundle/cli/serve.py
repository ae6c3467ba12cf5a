"""`bundle serve`: run the Open Inference Protocol server."""

from __future__ import annotations

from typing import Any

import click

from ..errors import MissingDependencyError
from .app import CONTEXT_SETTINGS, TRUSTED_OPTION, cli


# ---------------------------------------------------------------------------- serve
@cli.command(context_settings=CONTEXT_SETTINGS, short_help="Serve a bundle over HTTP and gRPC.")
@click.argument("path", metavar="PATH_OR_URL")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 for all).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes; each holds its own copy of the model.",
)
@TRUSTED_OPTION
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="ROWS",
    help="Rows per merged model call (default: the server's, 256).",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0),
    default=None,
    metavar="MS",
    help="How long an idle server waits for a batch to fill (default: the server's, 2).",
)
@click.option(
    "--drift-window",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Seconds of traffic the live drift metrics (/metrics, /drift) cover, for bundles "
    "with a training profile (default: the server's, 600; 0 turns live drift off).",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="Port of the Open Inference Protocol's gRPC service (same host).",
)
@click.option("--no-grpc", is_flag=True, help="Serve REST only (no gRPC port).")
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="A request's headers must arrive within this time (slower: 408, connection closed).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="A request's body must arrive within this time after its headers.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Open HTTP connections at most, per worker (one more: 503, closed).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    path: str,
    host: str,
    port: int,
    workers: int,
    trusted: bool,
    max_batch_size: int | None,
    max_wait_ms: float | None,
    drift_window: float | None,
    grpc_port: int,
    no_grpc: bool,
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
    log_level: str,
) -> None:
    """Serve a bundle: Open Inference Protocol V2 over HTTP and gRPC, /predict, /metrics,
    /drift.

    Runs until interrupted (Ctrl-C or SIGTERM finish the requests in flight). Needs the
    `serve` extra: pip install 'keras-bundle[serve]'.
    """
    try:
        from .. import serve as server
    except ImportError as exc:
        raise MissingDependencyError(
            f"`bundle serve` needs the 'serve' extra: {exc}\n"
            "Install it with: pip install 'keras-bundle[serve]'",
            package=exc.name or "starlette",
            extra="serve",
        ) from exc
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "trusted": trusted,
        "log_level": log_level,
        "grpc_port": None if no_grpc else grpc_port,
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "max_connections": max_connections,
    }
    if max_batch_size is not None:
        options["max_batch_size"] = max_batch_size
    if max_wait_ms is not None:
        options["max_wait_ms"] = max_wait_ms
    if drift_window is not None:
        options["drift_window"] = drift_window or None
    server.run(path, **options)
