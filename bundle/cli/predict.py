"""`bundle predict`: score a file with a bundle."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

import bundle as api

from ..errors import UsageError
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
    context_settings=CONTEXT_SETTINGS, short_help="Score a CSV, Parquet or JSON Lines file."
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
    default=16_384,
    show_default=True,
    help="Rows read, predicted and written at a time: bounds the memory used.",
)
@click.option("--scores", is_flag=True, help="Also write the model's raw scores (score_*).")
@TRUSTED_OPTION
@click.option("--strict", is_flag=True, help="Refuse input columns the bundle does not know.")
@click.option(
    "--input-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default=None,
    help="Format of INPUT (default: from its suffix).",
)
@click.option(
    "--output-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default=None,
    help="Format of OUTPUT (default: from its suffix).",
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
    batch_size: int,
    scores: bool,
    trusted: bool,
    strict: bool,
    input_format: str | None,
    output_format: str | None,
    progress: bool | None,
) -> None:
    """Score a CSV, Parquet or JSON Lines file with a bundle, batch by batch.

    The output (CSV, Parquet or JSON Lines, from its suffix) holds the --id-column
    columns, a `prediction` column (when the bundle has a postprocess step) and, with
    --scores or without postprocessing, one score_* column per model output.
    """
    from ..fileio import tabular as tabular_io

    in_fmt = _file_format(tabular_io, input_file, input_format, "INPUT", "--input-format")
    out_fmt = _file_format(
        tabular_io, output, output_format, "'-o' / '--output'", "--output-format"
    )
    if not Path(input_file).is_file():
        raise UsageError(f"No input file at {input_file}.")
    if not Path(output).resolve().parent.is_dir():
        raise UsageError(f"The folder of {output} does not exist; create it first.")
    total = tabular_io.count_rows(input_file, in_fmt)
    started = time.perf_counter()
    loaded = api.Bundle.load(path, version=version, trusted=trusted)
    show = progress if progress is not None else sys.stderr.isatty()

    from tqdm import tqdm

    with tqdm(
        total=total,
        unit=" rows",
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
        )
    elapsed = time.perf_counter() - started
    click.echo(
        f"Wrote {rows:,} prediction(s) of {loaded.manifest.label} to {output} ({elapsed:.1f} s)."
    )
