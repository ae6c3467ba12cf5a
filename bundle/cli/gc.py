"""`bundle gc`: name, and on request reclaim, what killed saves left under a root."""

from __future__ import annotations

import re

import click

import bundle as api

from ..storage import GcReport
from .app import CONTEXT_SETTINGS, JSON_OPTION, _emit_json, cli
from .reading import _human_size, _table

_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")


class Duration(click.ParamType):
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` -> seconds."""

    name = "duration"

    def convert(self, value: object, param: object, ctx: object) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a duration: use e.g. 0, 90s, 30m, 24h or 7d.", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2) or ""]


@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Show what interrupted saves left; --delete reclaims it.",
)
@click.argument("root")
@click.option(
    "--delete",
    is_flag=True,
    help="Reclaim the leftovers. Without it nothing is changed (a dry run).",
)
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    metavar="AGE",
    help="Only leftovers untouched for AGE (0, 90s, 30m, 24h, 7d). Default: 0 on a local "
    "disk, where a live save's folder is locked; 24h on object storage.",
)
@JSON_OPTION
def gc(root: str, delete: bool, older_than: float | None, as_json: bool) -> None:
    """Show the leftovers of interrupted saves under ROOT; --delete reclaims them.

    Leftovers are staging folders of saves that died, old copies of replaced versions,
    objects that no manifest names, superseded alias records and the local cache's
    abandoned work folders. Published versions, aliases and anything a running process is
    writing are never touched.
    """
    report = api.gc(root, dry_run=not delete, older_than=older_than)
    if as_json:
        _emit_json(
            {
                "root": report.root,
                "dry_run": report.dry_run,
                "size": report.size,
                "leftovers": [
                    {
                        "location": item.location,
                        "what": item.what,
                        "size": item.size,
                        "age_seconds": round(item.age, 1),
                        "action": item.action,
                    }
                    for item in report.leftovers
                ],
                "skipped": list(report.skipped),
            }
        )
        return
    click.echo(describe(report, root))


def describe(report: GcReport, root: str) -> str:
    """The report as people read it: what, how big, how old, and what to run next."""
    count = len(report.leftovers)
    noun = "leftover" if count == 1 else "leftovers"
    if not count:
        lines = [f"No leftovers under {root}."]
    else:
        verb = "Found" if report.dry_run else "Reclaimed"
        lines = [f"{verb} {count} {noun} ({_human_size(report.size)}) under {root}:"]
        rows = [
            (
                _short(item.location, report.root),
                item.what if item.action == "delete" else f"{item.what} (restored)",
                _human_size(item.size),
                _age(item.age),
            )
            for item in report.leftovers
        ]
        lines.append(_table(None, rows))
        if report.dry_run:
            lines.append(f"Nothing was changed. Reclaim them with: bundle gc {root} --delete")
    if report.skipped:
        lines.append("Left alone (live work):")
        lines += [f"  {line}" for line in report.skipped]
    return "\n".join(lines)


def _short(location: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return location[len(prefix) :] if location.startswith(prefix) else location


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} old"
    return f"{seconds:.0f} s old"
