"""`bundle predict`: score a file with a bundle."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

import bundle as api

from ..core import ERROR_COLUMN
from ..errors import UsageError, bullet_list
from .app import CONTEXT_SETTINGS, TRUSTED_OPTION, VERSION_OPTION, cli


# ---------------------------------------------------------------------------- predict
def _file_format(tabular_io: Any, path: str, explicit: str | None, hint: str, option: str) -> str:
    try:
        return tabular_io.file_format(path, explicit)
    except ValueError as exc:
        suffixes = ", ".join(sorted(tabular_io.FORMATS))
        raise click.BadParameter(
            f"cannot tell the format of {path} from its suffix (known: {suffixes}); "
            f"pass {option} parquet, csv or jsonl.",
            param_hint=hint,
        ) from exc


@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Score a table file, a folder of images or a .npy file.",
)
@click.argument("path")
@click.argument("input_file", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    metavar="OUTPUT",
    help="Where to write the predictions (written atomically, only once complete).",
)
@VERSION_OPTION
@click.option(
    "--id-column",
    "id_columns",
    multiple=True,
    metavar="COL",
    help="An input column to copy into the output (repeat for several).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Rows (or images) read, predicted and written at a time: bounds the memory used. "
    "[default: 16,384 rows of a table; about 16 MiB of model input for images and arrays]",
)
@click.option("--scores", is_flag=True, help="Also write the model's raw scores (score_*).")
@TRUSTED_OPTION
@click.option("--strict", is_flag=True, help="Refuse input columns the bundle does not know.")
@click.option(
    "--input-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default=None,
    help="Format of a tabular INPUT (default: from its suffix).",
)
@click.option(
    "--output-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default=None,
    help="Format of OUTPUT (default: from its suffix).",
)
@click.option(
    "--on-error",
    type=click.Choice(["record", "skip", "raise"]),
    default="record",
    show_default=True,
    help="An image that cannot be read: its reason in an 'error' column (record), left "
    "out (skip), or stop with an error and write nothing (raise).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads decoding images. [default: one per core]",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: only when stderr is a terminal).",
)
def predict(
    path: str,
    input_file: str,
    output: str,
    version: str | None,
    id_columns: tuple[str, ...],
    batch_size: int | None,
    scores: bool,
    trusted: bool,
    strict: bool,
    input_format: str | None,
    output_format: str | None,
    on_error: str,
    workers: int | None,
    progress: bool | None,
) -> None:
    """Score INPUT with a bundle, batch by batch, into OUTPUT.

    INPUT is a CSV, Parquet or JSON Lines file; or, for a bundle that records how training
    read images, a folder of images (walked as image_dataset_from_directory walks it), a
    glob ('scans/*.png'), an fsspec URL (s3://bucket/scans/) or one image; or a .npy file
    of arrays (memory-mapped). The output (CSV, Parquet or JSON Lines, from its suffix)
    holds the --id-column columns (for images the 'path', for .npy the 'index'), a
    `prediction` column (when the bundle has a postprocess step) and, with --scores or
    without postprocessing, one score_* column per model output; for images, an 'error'
    column too, with the reason of each image that could not be read.
    """
    from ..fileio import tabular as tabular_io

    out_fmt = _file_format(
        tabular_io, output, output_format, "'-o' / '--output'", "--output-format"
    )
    if not Path(output).resolve().parent.is_dir():
        raise UsageError(f"The folder of {output} does not exist; create it first.")
    tabular = input_format is not None or not _is_stream(input_file, tabular_io.FORMATS)
    if tabular:
        in_fmt = _file_format(tabular_io, input_file, input_format, "INPUT", "--input-format")
        if not Path(input_file).is_file():
            raise UsageError(f"No input file at {input_file}.")
        total = tabular_io.count_rows(input_file, in_fmt)
        unit = " rows"
    else:
        in_fmt = None
        total, unit = _count_items(input_file)
    started = time.perf_counter()
    loaded = api.Bundle.load(path, version=version, trusted=trusted)
    show = progress if progress is not None else sys.stderr.isatty()
    unreadable: list[tuple[str, str]] = []

    from tqdm import tqdm

    with tqdm(
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=not show,
        desc="Scoring",
        dynamic_ncols=True,
    ) as bar:
        rows = loaded.predict_file(
            input_file,
            output,
            id_column=list(id_columns),
            batch_size=batch_size,
            scores=scores,
            input_format=in_fmt,
            output_format=out_fmt,
            strict=strict,
            progress=bar.update,
            on_error=on_error,
            workers=workers,
            on_unreadable=lambda name, reason: unreadable.append((name, reason)),
        )
    elapsed = time.perf_counter() - started
    click.echo(
        f"Wrote {rows:,} prediction(s) of {loaded.manifest.label} to {output} ({elapsed:.1f} s)."
    )
    if unreadable:
        where = (
            f"their reasons are in the '{ERROR_COLUMN}' column"
            if on_error == "record"
            else "they were skipped"
        )
        click.echo(
            f"{len(unreadable):,} image(s) could not be read; {where}:\n"
            + bullet_list(f"{name}: {reason}" for name, reason in unreadable),
            err=True,
        )


def _is_stream(source: str, tabular_suffixes: Any) -> bool:
    """Whether INPUT is images or a .npy file rather than a table file."""
    from ..fileio import images as image_io

    suffix = Path(source).suffix.lower()
    if suffix in tabular_suffixes:
        return False
    return (
        suffix in (".npy", *image_io.IMAGE_SUFFIXES)
        or "://" in source
        or Path(source).is_dir()
        or image_io.is_local_glob(source)
    )


def _count_items(source: str) -> tuple[int | None, str]:
    """How many images or array rows `source` holds, for the progress bar."""
    from ..fileio import arrays as array_io
    from ..fileio import images as image_io

    if array_io.is_npy(source) and "://" not in source:
        return len(array_io.open_npy(source)), " rows"
    return image_io.open_images(source).count(), " images"
