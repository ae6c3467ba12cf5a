"""`bundle drift`: compare a data file with a bundle's training profile."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

import bundle as api

from ..drift import DriftThresholds
from ..errors import UsageError
from .app import CONTEXT_SETTINGS, JSON_OPTION, TRUSTED_OPTION, VERSION_OPTION, _emit_json, cli
from .predict import _file_format


class _Threshold(click.ParamType):
    """A non-negative number, or ``off`` to switch the check off."""

    name = "NUMBER|off"

    def convert(self, value: Any, param: Any, ctx: Any) -> float | None:
        if value is None or isinstance(value, float):
            return value
        if str(value).lower() == "off":
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number or 'off'.", param, ctx)
        if number < 0:
            self.fail(f"{value!r} is negative; thresholds are >= 0.", param, ctx)
        return number


_DEFAULTS = DriftThresholds()
THRESHOLD_OPTIONS = [
    ("psi", "PSI above which a feature drifts"),
    ("ks", "Kolmogorov-Smirnov statistic above which a numeric feature drifts"),
    ("js", "Jensen-Shannon distance above which a categorical feature drifts"),
    ("missing", "change of the missing-value share above which a feature drifts"),
    ("unseen", "share of never-seen categories above which a feature drifts"),
    ("out_of_range", "share of values outside training's min..max above which it drifts"),
]


def _threshold_options(function: Any) -> Any:
    for name, text in reversed(THRESHOLD_OPTIONS):
        flag = "--" + name.replace("_", "-")
        default = getattr(_DEFAULTS, name)
        function = click.option(
            flag,
            name,
            type=_Threshold(),
            default=None,
            help=f"The {text} (default {default}; 'off' to ignore it).",
        )(function)
    return function


@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Compare data with the training profile; exit 1 on drift.",
)
@click.argument("path")
@click.argument("data", metavar="DATA")
@VERSION_OPTION
@JSON_OPTION
@click.option(
    "--html",
    "html_out",
    metavar="FILE",
    default=None,
    help="Also write the report as one self-contained HTML page (plots inline, no network).",
)
@_threshold_options
@click.option(
    "--min-rows",
    type=click.IntRange(min=0),
    default=_DEFAULTS.min_rows,
    show_default=True,
    help="From this many current values on, a statistic over its threshold flags the "
    "feature; with fewer, only a shift significant at --significance does.",
)
@click.option(
    "--significance",
    type=click.FloatRange(min=0, max=1),
    default=_DEFAULTS.significance,
    show_default=True,
    help="With fewer than --min-rows values, the p-value below which a shift counts.",
)
@click.option(
    "--no-outputs",
    is_flag=True,
    help="Compare the inputs only: the model is not loaded (fast; TensorFlow is not "
    "imported, --trusted is never needed).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=65_536,
    show_default=True,
    help="Rows read and scored at a time: bounds the memory used.",
)
@click.option(
    "--input-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default=None,
    help="Format of DATA (default: from its suffix).",
)
@TRUSTED_OPTION
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: only when stderr is a terminal).",
)
def drift(
    path: str,
    data: str,
    version: str | None,
    as_json: bool,
    html_out: str | None,
    min_rows: int,
    significance: float,
    no_outputs: bool,
    batch_size: int,
    input_format: str | None,
    trusted: bool,
    progress: bool | None,
    **thresholds: float | None,
) -> None:
    """Compare a Parquet, CSV or JSON Lines file with the bundle's training profile.

    Per feature (inputs, and the model's outputs unless --no-outputs): the population
    stability index, the Kolmogorov-Smirnov statistic (numeric) or the Jensen-Shannon
    distance (categorical), the missing-share change, and the shares of unseen categories
    and out-of-range values; worst feature first. The file is streamed in batches.

    Exit code 0 when nothing drifted, 1 when a feature exceeds its thresholds (the report
    is printed either way), 1 with "Error: ..." when the comparison cannot be made.
    """
    from ..fileio import tabular as tabular_io

    fmt = _file_format(tabular_io, data, input_format, "DATA", "--input-format")
    if not Path(data).is_file():
        raise UsageError(f"No data file at {data}.")
    if html_out is not None and not Path(html_out).resolve().parent.is_dir():
        raise UsageError(f"The folder of {html_out} does not exist; create it first.")
    off = _switched_off()
    chosen = {
        name: getattr(_DEFAULTS, name) if value is None and name not in off else value
        for name, value in thresholds.items()
    }
    limits = DriftThresholds(**chosen, min_rows=min_rows, significance=significance)
    started = time.perf_counter()
    total = tabular_io.count_rows(data, fmt)
    show = progress if progress is not None else sys.stderr.isatty()

    from tqdm import tqdm

    with tqdm(
        total=total, unit=" rows", file=sys.stderr, disable=not show, desc="Comparing"
    ) as bar:
        if no_outputs:
            report = _input_drift(path, version, data, fmt, batch_size, limits, bar.update)
        else:
            loaded = api.Bundle.load(path, version=version, trusted=trusted)
            report = loaded.drift(
                data,
                thresholds=limits,
                batch_size=batch_size,
                input_format=fmt,
                progress=bar.update,
            )
    if html_out is not None:
        Path(html_out).write_text(report.to_html(), encoding="utf-8")
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(str(report))
        elapsed = time.perf_counter() - started
        written = f"; HTML report: {html_out}" if html_out else ""
        click.echo(f"({report.rows:,} rows in {elapsed:.1f} s{written})")
    if report.has_drift:
        raise click.exceptions.Exit(1)


def _input_drift(
    path: str,
    version: str | None,
    data: str,
    fmt: str,
    batch_size: int,
    limits: DriftThresholds,
    progress: Any,
) -> Any:
    """Input drift from the verified profile and the file alone: the model is not loaded
    (no TensorFlow import, and no stored code runs, so no --trusted is needed)."""
    from ..drift import DriftAccumulator
    from ..drift.report import no_profile_error
    from ..fileio import tabular as tabular_io
    from ..format.profile import read_profile
    from ..format.snapshot import open_snapshot
    from ..storage import fetch

    # The profile read is the one verified with the manifest (a snapshot, as a load).
    with open_snapshot(fetch(path, version)) as snapshot:
        manifest = snapshot.manifest
        if manifest.profile is None:
            raise no_profile_error(manifest.label)
        profile = read_profile(snapshot.path, manifest.profile)
    accumulator = DriftAccumulator(profile, outputs=False)
    types = tabular_io.csv_column_types(manifest.input_schema, numbers_as_text=True)
    for frame in tabular_io.iter_batches(data, batch_size=batch_size, fmt=fmt, column_types=types):
        accumulator.update(frame)
        progress(len(frame))
    return accumulator.report(limits, label=manifest.label)


def _switched_off() -> set[str]:
    """Thresholds given as 'off' on the command line (click hands them over as None)."""
    ctx = click.get_current_context()
    off = set()
    for name, _ in THRESHOLD_OPTIONS:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            off.add(name)
    return off
