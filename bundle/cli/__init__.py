"""The ``bundle`` command: one module per group of subcommands, registered on `app.cli`."""

from __future__ import annotations

from . import diff, drift, inspect, predict, releases, serve  # noqa: F401  (register the commands)
from .app import cli, main

__all__ = ["cli", "main"]
