"""The ``bundle`` command: one module per group of subcommands, registered on `app.cli`."""

from __future__ import annotations

from . import (  # noqa: F401  (register the commands)
    diff,
    distribution,
    drift,
    gc,
    inspect,
    pack,
    predict,
    releases,
    serve,
)
from .app import cli, main

__all__ = ["cli", "main"]
