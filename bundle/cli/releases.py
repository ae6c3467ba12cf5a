"""`bundle export`, `bundle tag` and `bundle archive`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

import bundle as api

from ..errors import UsageError
from ..export import require_tensorflow
from ..storage import is_archive_name, is_url
from .app import CONTEXT_SETTINGS, VERSION_OPTION, cli
from .reading import _human_size, _read_manifest_at


# ---------------------------------------------------------------------------- export
@cli.command(
    name="export",
    context_settings=CONTEXT_SETTINGS,
    short_help="Export the whole pipeline as one TensorFlow SavedModel.",
)
@click.argument("path")
@click.argument("out", type=click.Path(dir_okay=True, file_okay=False))
@click.option("--version", "version", default=None, help="The version, when PATH is a root.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["saved_model"]),
    default="saved_model",
    show_default=True,
    help="The export format.",
)
@click.option(
    "--missing-token",
    default="",
    show_default=True,
    help="The string that stands for a missing value in text columns of the signature.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--trusted", is_flag=True, help="Load parts that execute code (Lambda layers).")
def export_command(
    path: str,
    out: str,
    version: str | None,
    fmt: str,
    missing_token: str,
    overwrite: bool,
    trusted: bool,
) -> None:
    """Export PATH as a TensorFlow SavedModel at OUT, servable by TF Serving.

    The serving_default signature takes the raw named features and returns the decoded
    labels and the scores; no Python runs at serving time. A bundle with a step that has no
    TensorFlow form is refused, naming the step; nothing is written then. The export runs
    Keras on TensorFlow whatever KERAS_BACKEND says: only TensorFlow writes SavedModels.
    """
    require_tensorflow()
    if "keras" not in sys.modules:  # Keras picks its backend once, when first imported
        os.environ["KERAS_BACKEND"] = "tensorflow"
    loaded = api.Bundle.load(path, version=version, trusted=trusted)
    written = loaded.export(out, format=fmt, missing_token=missing_token, overwrite=overwrite)
    click.echo(f"exported {loaded.manifest.label} to {written}")


# ---------------------------------------------------------------------------- tag
@cli.command(context_settings=CONTEXT_SETTINGS, short_help="Point an alias at a version.")
@click.argument("root")
@click.argument("alias")
@click.argument("version")
def tag(root: str, alias: str, version: str) -> None:
    """Point ALIAS at VERSION under ROOT (atomic; the alias keeps its history).

    Then `bundle inspect ROOT@ALIAS` and Bundle.load("ROOT@ALIAS") follow it.
    """
    record = api.tag(root, alias, version)
    history = record.get("history", [])
    previous = history[-2]["version"] if len(history) > 1 else None
    moved = f" (was {previous})" if previous and previous != version else ""
    click.echo(f"{alias} -> {version} under {root}{moved}")


# ---------------------------------------------------------------------------- archive
@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Write a bundle version as a .tar.gz or .zip release file.",
)
@click.argument("path")
@click.argument("output")
@VERSION_OPTION
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def archive(path: str, output: str, version: str | None, force: bool) -> None:
    """Write a bundle version as a reproducible .tar.gz or .zip release file.

    The same bundle always gives a byte-identical file; OUTPUT may be an fsspec URL.
    Load it back with Bundle.load(OUTPUT) or any command's PATH.
    """
    if not is_archive_name(output):
        raise click.BadParameter(
            f"{output!r} does not end with .tar.gz, .tgz or .zip.", param_hint="OUTPUT"
        )
    if not force and not is_url(output) and Path(output).exists():
        raise UsageError(
            f"{output} already exists; release files are not replaced silently.\n"
            "Choose another name, or pass --force to replace it."
        )
    manifest = _read_manifest_at(path, version).manifest
    written = api.archive(path, output, version=version)
    size = f" ({_human_size(Path(written).stat().st_size)})" if isinstance(written, Path) else ""
    click.echo(f"Archived {manifest.label} to {written}{size}")
