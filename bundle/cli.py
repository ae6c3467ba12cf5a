"""The ``bundle`` command: inspect, verify, list, predict, archive, tag, diff and serve bundles.

Every PATH is anything `Bundle.load` accepts: a version directory, a root of versions (the
highest is taken, or ``--version``), ``root@alias``, a ``.tar.gz``/``.zip`` archive, or any
of these as an fsspec URL (``s3://bucket/models/churn``).

Exit codes::

    0  success (for `verify`: every check passed; for `diff`: always, unless --exit-code)
    1  an error (``Error: <message>`` on stderr), a failed check, or with
       ``diff --exit-code`` bundles that differ
    2  bad usage: a missing argument, an unknown option, an invalid value (click's convention)

Tracebacks are printed only with ``bundle --debug <command> ...``.

`inspect`, `list`, `tag`, `archive`, `diff` and `verify --no-load` read manifests and files
only: they never import TensorFlow or Keras, and start in a fraction of the time `predict`,
`verify` and `serve` need.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import bundle as api

from .archiving import is_archive_name
from .environment import PACKAGES, capture_environment, major_minor
from .errors import BundleError, BundleNotFoundError, BundleWarning
from .integrity import PLUMBING
from .locations import fetch, is_url, open_root, split_alias
from .manifest import MANIFEST_FILE, Manifest, parse_manifest, read_manifest
from .schema import InputSchema

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DIFF_SECTIONS = {
    "name": "name",
    "input_schema": "input schema",
    "model": "model",
    "steps": "steps",
    "custom_objects": "custom objects",
    "metadata": "metadata",
    "environment": "environment",
}
# Column fields `diff` compares. minimum/maximum are statistics of the saved example, not
# part of the contract: they change with every retraining (`inspect` shows them).
COLUMN_FIELDS = (
    "kind",
    "dtype",
    "categories",
    "closed_categories",
    "dtype_categories",
    "ordered",
    "has_missing",
    "missing_handled",
    "missing_value",
)
# Members of a Keras v3 model file: what `diff` calls them. metadata.json (the Keras version
# and the save date) is left out: it differs for every save of the same model.
KERAS_MEMBERS = {"config.json": "architecture", "model.weights.h5": "weights"}
KERAS_METADATA = "metadata.json"
STEP_FIELDS = ("class", "serializer", "executes_code", "mode")
OBJECT_FIELDS = ("kind", "storage", "module", "qualname", "serializer", "executes_code")


@dataclass
class _State:
    """What the group's options tell `main` (set by the group callback)."""

    debug: bool = False


# ---------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bundle`` command with `argv` (default: ``sys.argv[1:]``) and return its exit code.

    `BundleError` (and any other failure) becomes ``Error: <message>`` on stderr and exit code
    1; usage errors exit 2. ``bundle --debug ...`` prints the full traceback instead.

    Example:
        >>> from bundle.cli import main
        >>> main(["inspect", "models/churn", "--json"])
        0
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning lines
    state = _State()
    args = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            # Without standalone mode click returns the exit code of `ctx.exit(code)` (and
            # of --help, --version) instead of calling sys.exit: we return it.
            code = cli.main(args, prog_name="bundle", standalone_mode=False, obj=state)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            return 1
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            return 130
        except BrokenPipeError:
            # `bundle list | head`: the reader left. Point stdout at devnull so that the
            # interpreter's final flush does not fail on the closed pipe too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except Exception as exc:
            return _report(exc, debug=state.debug)
    return code if isinstance(code, int) else 0


def _report(exc: BaseException, *, debug: bool) -> int:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        return 1
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, (BundleError, OSError, ValueError)):
        message = f"{type(exc).__name__}: {message}"
    click.echo(f"Error: {message}", err=True)
    if not isinstance(exc, BundleError):
        click.echo("(Run `bundle --debug ...` for the full traceback.)", err=True)
    return 1


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
    """Our warnings read as ``Warning: <message>``; other libraries' keep their usual form."""
    if isinstance(category, type) and issubclass(category, BundleWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno).rstrip(), err=True)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=True))


# ---------------------------------------------------------------------------- the group
@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--debug", is_flag=True, help="Print full tracebacks on errors.")
@click.version_option(
    api.__version__, "--version", prog_name="keras-bundle", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Inspect, verify, list, predict with, archive, tag, diff and serve keras-bundles.

    PATH is a bundle version directory, a root of versions (the highest, or --version),
    ROOT@ALIAS, a .tar.gz/.zip archive, or any of these as an fsspec URL (s3://...).

    Exit codes: 0 success, 1 error or failed check, 2 bad usage.
    """
    if isinstance(ctx.obj, _State):
        ctx.obj.debug = debug


VERSION_OPTION = click.option(
    "--version",
    "version",
    metavar="V",
    default=None,
    help="The version (or alias) to use when PATH is a root of versions.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
TRUSTED_OPTION = click.option(
    "--trusted",
    is_flag=True,
    help="Allow loading parts that execute stored code (pickles, Lambda layers). Only for "
    "bundles you made or whose source you trust.",
)


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Located:
    """A bundle version's manifest, where it is, and its local directory (None if remote)."""

    manifest: Manifest
    where: str
    local: Path | None


def _read_manifest_at(location: str, version: str | None) -> _Located:
    """The manifest of the version at `location`, and where it is; never reads other files.

    For a remote root or version only ``manifest.json`` is downloaded, not the model.
    """
    text, alias = split_alias(location)
    if alias is not None:
        if version is not None and version != alias:
            raise click.UsageError(f"Pass either {location!r} or --version {version}, not both.")
        version = alias
    if is_url(text) and not is_archive_name(text):
        root = open_root(text)
        if root.is_version():
            parent, _, name = root.location.rpartition("/")
            if version is not None and version != name:
                raise BundleNotFoundError(
                    f"{root.location} is the bundle version {name!r}, not {version!r}.\n"
                    f"Pass its root ({parent}) with --version {version}.",
                    location=root.location,
                    available=[name],
                )
            data = open_root(parent).read_manifest_text(name)
            manifest = parse_manifest(data, source=f"{root.location}/{MANIFEST_FILE}")
            return _Located(manifest, root.location, None)
        chosen = root.resolve(version)
        where = f"{root.location}/{chosen}"
        manifest = parse_manifest(
            root.read_manifest_text(chosen), source=f"{where}/{MANIFEST_FILE}"
        )
        return _Located(manifest, where, None)
    path = fetch(location, version)
    return _Located(read_manifest(path), str(path), path)


def _input_schema(manifest: Manifest) -> InputSchema | None:
    return InputSchema.from_dict(manifest.input_schema) if manifest.input_schema else None


def _human_size(size: int) -> str:
    """``812 B``, ``57.3 KiB``, ``1.2 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], indent: str = "  ") -> str:
    """Rows as an aligned text table under `header` (None: no header line)."""
    body = [[str(c) for c in row] for row in rows]
    cells = body if header is None else [[str(c) for c in header], *body]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join(
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _heading(text: str) -> str:
    return click.style(text, bold=True)


# ---------------------------------------------------------------------------- facts
def _signature_line(tensor: Mapping[str, Any]) -> str:
    # The same rendering as the model card (bundle/card.py): dtype then the shape tuple.
    return f"{tensor['dtype']} {tuple(tensor['shape'])}"


def _trust_reasons(manifest: Manifest) -> list[dict[str, Any]]:
    """Every part whose loading executes stored code, with why (what the pickle references)."""
    parts = []
    model = manifest.model
    if model.get("executes_code"):
        parts.append(
            {
                "part": "model",
                "file": model["file"],
                "serializer": model.get("serializer", "keras"),
                "what": "a Keras model with Lambda layers",
                "reason": "its Lambda layers hold Python code that runs when the model loads",
                "references": [],
            }
        )
    for record in manifest.parts_executing_code:
        what = record.get("class") or f"{record.get('module')}.{record.get('qualname')}"
        references = [i for i in record.get("imports") or [] if not i.startswith(PLUMBING)]
        parts.append(
            {
                "part": record["name"],
                "file": record.get("file"),
                "serializer": record.get("serializer"),
                "what": what,
                "reason": f"a {record.get('serializer')} pickle of {what}: unpickling runs code",
                "references": references,
            }
        )
    return parts


def _environment_rows(recorded: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """``package, saved, running, differs`` rows; `differs` compares major.minor as load does."""
    running = capture_environment()
    keys = ["python", "platform", *PACKAGES]
    keys += [key for key in recorded if key not in keys]
    rows = []
    for key in keys:
        saved, now = recorded.get(key), running.get(key)
        if key == "platform":
            differs = saved != now
        else:
            differs = (saved is None) != (now is None) or bool(
                saved and now and major_minor(saved) != major_minor(now)
            )
        rows.append({"package": key, "saved": saved, "running": now, "differs": differs})
    return rows


def _steps(manifest: Manifest) -> list[dict[str, Any]]:
    return [
        {
            "stage": stage,
            "name": record["name"],
            "class": record["class"],
            "serializer": record["serializer"],
            "file": record["file"],
            "executes_code": record["executes_code"],
            "imports": list(record.get("imports") or []),
        }
        for stage in ("preprocess", "postprocess")
        for record in getattr(manifest, stage)
    ]


def _facts(manifest: Manifest, location: str) -> dict[str, Any]:
    """Everything `inspect` reports, as one JSON-ready dict (the text output renders it)."""
    files = manifest.files
    trust = _trust_reasons(manifest)
    return {
        "name": manifest.name,
        "version": manifest.version,
        "created": manifest.created,
        "location": location,
        "format": manifest.format,
        "format_version": manifest.format_version,
        "size": sum(int(entry["size"]) for entry in files.values()),
        "files": len(files),
        # As the model card decides: any pickled part, or a model with Lambda layers.
        "needs_trusted": bool(trust),
        "trusted_parts": trust,
        "environment": _environment_rows(manifest.environment),
        "input_schema": manifest.input_schema,
        "model": {
            "file": manifest.model["file"],
            "serializer": manifest.model.get("serializer", "keras"),
            "executes_code": manifest.model.get("executes_code", False),
            "inputs": manifest.model["inputs"],
            "outputs": manifest.model["outputs"],
        },
        "steps": _steps(manifest),
        "custom_objects": [dict(record) for record in manifest.custom_objects],
        "example": manifest.example,
        "metadata": manifest.metadata,
    }


def _render_inspect(facts: Mapping[str, Any], schema: InputSchema | None) -> str:
    out = [
        _heading(f"{facts['name']} {facts['version']}"),
        _table(
            None,
            [
                ("created", facts["created"]),
                ("location", facts["location"]),
                ("format", f"{facts['format']} {facts['format_version']}"),
                ("size", f"{_human_size(facts['size'])} in {facts['files']} files (+ manifest)"),
                ("trusted", "needs trusted=True" if facts["needs_trusted"] else "not needed"),
            ],
        ),
        "",
        _heading("Metadata"),
        _indent(json.dumps(facts["metadata"], indent=2, sort_keys=True, default=str)),
        "",
        _heading("Input"),
        _indent(str(schema) if schema is not None else "(no input schema recorded)"),
        "",
        _heading("Model"),
    ]
    model = facts["model"]
    out.append(
        f"  {model['file']} ({model['serializer']}"
        + (", Lambda layers: needs trusted=True" if model["executes_code"] else "")
        + ")"
    )
    out.append(
        _table(
            None,
            [("input", t["name"], _signature_line(t)) for t in model["inputs"]]
            + [("output", t["name"], _signature_line(t)) for t in model["outputs"]],
        )
    )
    out += ["", _heading("Steps")]
    if facts["steps"]:
        out.append(
            _table(
                ("step", "class", "serializer", "file", "trust"),
                [
                    (
                        s["name"],
                        s["class"],
                        s["serializer"],
                        s["file"],
                        "needs trusted=True" if s["executes_code"] else "",
                    )
                    for s in facts["steps"]
                ],
            )
        )
    else:
        out.append("  (none)")
    out += ["", _heading("Custom objects")]
    if facts["custom_objects"]:
        out.append(
            _table(
                ("name", "kind", "stored", "object", "trust"),
                [
                    (
                        o["name"],
                        o["kind"],
                        f"by {o['storage']}",
                        f"{o['module']}.{o['qualname']}",
                        "needs trusted=True" if o["executes_code"] else "",
                    )
                    for o in facts["custom_objects"]
                ],
            )
        )
        if any(o["storage"] == "reference" for o in facts["custom_objects"]):
            out.append("  Objects stored by reference are imported at load: install their modules.")
    else:
        out.append("  (none)")
    out += ["", _heading("Trust")]
    if facts["trusted_parts"]:
        out.append(
            f"  {len(facts['trusted_parts'])} part(s) execute stored code when loaded, so "
            "loading needs trusted=True (--trusted):"
        )
        for part in facts["trusted_parts"]:
            line = f"  - {part['file']} ({part['part']}): {part['reason']}"
            if part["references"]:
                shown = ", ".join(part["references"][:8])
                more = len(part["references"]) - 8
                line += f" (references {shown}" + (f", ... ({more} more))" if more > 0 else ")")
            out.append(line)
        out.append("  Pass --trusted only for bundles you made or whose source you trust.")
    else:
        out.append("  Every part loads without executing stored code: trusted=True not needed.")
    out += ["", _heading("Environment") + " (saved vs running; * = major.minor differs)"]
    out.append(
        _table(
            ("package", "saved", "running", ""),
            [
                (r["package"], r["saved"] or "-", r["running"] or "-", "*" if r["differs"] else "")
                for r in facts["environment"]
            ],
        )
    )
    return "\n".join(out)


# ---------------------------------------------------------------------------- inspect
@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Show what a bundle holds (reads its manifest only).",
)
@click.argument("path")
@VERSION_OPTION
@JSON_OPTION
def inspect(path: str, version: str | None, as_json: bool) -> None:
    """Show what a bundle holds, from its manifest alone (nothing is loaded).

    Name, version, creation time, size, metadata, the input contract, the model signature,
    the steps and custom objects, which parts need --trusted and why, and the training
    environment next to the running one. The bundle's README.md model card holds the same
    facts. With a remote PATH only manifest.json is downloaded.
    """
    found = _read_manifest_at(path, version)
    manifest = found.manifest
    facts = _facts(manifest, found.where)
    if as_json:
        _emit_json(facts)
        return
    click.echo(_render_inspect(facts, _input_schema(manifest)))


# ---------------------------------------------------------------------------- verify
@cli.command(
    context_settings=CONTEXT_SETTINGS,
    short_help="Check a bundle's files, that it loads, and its saved outputs.",
)
@click.argument("path")
@VERSION_OPTION
@TRUSTED_OPTION
@click.option(
    "--no-load",
    is_flag=True,
    help="Check the manifest and file hashes only (fast; TensorFlow is not imported).",
)
@JSON_OPTION
def verify(path: str, version: str | None, trusted: bool, no_load: bool, as_json: bool) -> None:
    """Check a bundle: manifest, file hashes, and (unless --no-load) that it loads and
    replays its saved example outputs.

    Prints a PASS/FAIL line per check. Exit code 0 if every check passed, 1 otherwise.
    """
    report = api.verify(path, version=version, trusted=trusted, load=not no_load)
    if as_json:
        _emit_json(report.to_dict())
    else:
        for check in report.checks:
            mark = "PASS" if check.passed else "FAIL"
            first, *rest = (check.detail or "").splitlines() or [""]
            click.echo(f"{mark}  {check.name}" + (f": {first}" if first else ""))
            for line in rest:
                click.echo(f"      {line}")
        failed = len(report.failed)
        verdict = "verified" if report.ok else f"FAILED ({failed} of {len(report.checks)} checks)"
        click.echo(f"{report.label}: {verdict}")
    if not report.ok:
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------- list
@cli.command(
    name="list",
    context_settings=CONTEXT_SETTINGS,
    short_help="List the versions under a root, with sizes and aliases.",
)
@click.argument("root")
@JSON_OPTION
def list_command(root: str, as_json: bool) -> None:
    """List the published versions under ROOT, with creation time, size and aliases."""
    if not is_url(root):
        local = Path(root[len("file://") :] if root.startswith("file://") else root)
        if (local / MANIFEST_FILE).is_file():
            raise BundleError(
                f"{root} is one bundle version ({local.name!r}), not a root of versions.\n"
                f"List its root instead: bundle list {local.parent}"
            )
        if not local.is_dir():
            raise BundleNotFoundError(f"{root} does not exist.", location=root)
    infos = api.list_versions(root)
    if as_json:
        _emit_json(
            [
                {
                    "version": info.version,
                    "created": info.created,
                    "size": info.size,
                    "aliases": list(info.aliases),
                    "location": info.location,
                }
                for info in infos
            ]
        )
        return
    if not infos:
        click.echo(f"No published versions under {root}.", err=True)
        return
    click.echo(
        _table(
            ("version", "created", "size", "aliases"),
            [(i.version, i.created, _human_size(i.size), ", ".join(i.aliases)) for i in infos],
            indent="",
        )
    )


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
    TensorFlow form is refused, naming the step; nothing is written then.
    """
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
        raise BundleError(
            f"{output} already exists; release files are not replaced silently.\n"
            "Choose another name, or pass --force to replace it."
        )
    manifest = _read_manifest_at(path, version).manifest
    written = api.archive(path, output, version=version)
    size = f" ({_human_size(Path(written).stat().st_size)})" if isinstance(written, Path) else ""
    click.echo(f"Archived {manifest.label} to {written}{size}")


# ---------------------------------------------------------------------------- diff
def _change(section: str, path: str, a: Any = None, b: Any = None, kind: str = "changed") -> dict:
    return {"section": section, "path": path, "change": kind, "a": a, "b": b}


def _compare_records(
    section: str,
    prefix: str,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    keys: Iterable[str],
) -> list[dict]:
    return [
        _change(section, f"{prefix}.{key}", a.get(key), b.get(key))
        for key in keys
        if a.get(key) != b.get(key)
    ]


def _schema_changes(a: Any, b: Any, prefix: str = "") -> list[dict]:
    section = "input_schema"
    if a is None or b is None:
        return [] if a == b else [_change(section, prefix or "schema", a, b)]
    if a.get("kind") != b.get("kind"):
        return [_change(section, f"{prefix}kind", a.get("kind"), b.get("kind"))]
    kind = a["kind"]
    if kind == "tabular":
        columns_a = {str(c["name"]): c for c in a["columns"]}
        columns_b = {str(c["name"]): c for c in b["columns"]}
        changes = []
        for name in columns_a:
            if name not in columns_b:
                changes.append(
                    _change(
                        section,
                        f"{prefix}columns.{name}",
                        _column_summary(columns_a[name]),
                        kind="removed",
                    )
                )
        for name in columns_b:
            if name not in columns_a:
                changes.append(
                    _change(
                        section,
                        f"{prefix}columns.{name}",
                        b=_column_summary(columns_b[name]),
                        kind="added",
                    )
                )
        for name in columns_a:
            if name in columns_b:
                changes += _compare_records(
                    section,
                    f"{prefix}columns.{name}",
                    columns_a[name],
                    columns_b[name],
                    COLUMN_FIELDS,
                )
        order_a = [n for n in columns_a if n in columns_b]
        order_b = [n for n in columns_b if n in columns_a]
        if order_a != order_b:
            # Matters for positional input (arrays, lists of lists), not for DataFrames.
            changes.append(_change(section, f"{prefix}column order", order_a, order_b))
        return changes
    if kind == "multi":
        inputs_a, inputs_b = a.get("inputs", {}), b.get("inputs", {})
        changes = []
        for name in inputs_a:
            where = f"{prefix}inputs.{name}"
            if name not in inputs_b:
                changes.append(_change(section, where, inputs_a[name].get("kind"), kind="removed"))
            else:
                changes += _schema_changes(inputs_a[name], inputs_b[name], f"{where}.")
        for name in inputs_b:
            if name not in inputs_a:
                where = f"{prefix}inputs.{name}"
                changes.append(_change(section, where, b=inputs_b[name].get("kind"), kind="added"))
        return changes
    keys = sorted((set(a) | set(b)) - {"kind"})
    return [
        _change(section, f"{prefix}{key}", a.get(key), b.get(key))
        for key in keys
        if a.get(key) != b.get(key)
    ]


def _column_summary(column: Mapping[str, Any]) -> str:
    return f"{column.get('kind')} {column.get('dtype') or '?'}"


def _file_digest(manifest: Manifest, relative: str | None) -> str | None:
    entry = manifest.files.get(relative or "")
    return entry["sha256"] if entry else None


def _model_members(found: _Located) -> dict[str, str] | None:
    """``{member: sha256}`` of a local Keras v3 model file (a zip), minus its save time.

    The file's own hash differs for every save (``metadata.json`` holds the save date), so
    `diff` compares the architecture (``config.json``) and the weights one by one.
    """
    if found.local is None:
        return None
    import hashlib
    import zipfile

    try:
        with zipfile.ZipFile(found.local / found.manifest.model["file"]) as archive:
            return {
                info.filename: hashlib.sha256(archive.read(info)).hexdigest()
                for info in archive.infolist()
                if info.filename != KERAS_METADATA
            }
    except (OSError, zipfile.BadZipFile):
        return None


def _model_changes(found_a: _Located, found_b: _Located) -> list[dict]:
    a, b = found_a.manifest, found_b.manifest
    changes = []
    for direction in ("inputs", "outputs"):
        specs_a, specs_b = a.model[direction], b.model[direction]
        for i in range(max(len(specs_a), len(specs_b))):
            path = f"{direction}[{i}]"
            if i >= len(specs_b):
                changes.append(_change("model", path, _tensor_summary(specs_a[i]), kind="removed"))
            elif i >= len(specs_a):
                changes.append(_change("model", path, b=_tensor_summary(specs_b[i]), kind="added"))
            elif specs_a[i] != specs_b[i]:
                changes.append(
                    _change("model", path, _tensor_summary(specs_a[i]), _tensor_summary(specs_b[i]))
                )
    changes += _compare_records("model", "model", a.model, b.model, ("serializer", "executes_code"))
    members_a, members_b = _model_members(found_a), _model_members(found_b)
    if members_a is not None and members_b is not None:
        for member in [*members_a, *(m for m in members_b if m not in members_a)]:
            label = KERAS_MEMBERS.get(member, member)
            digest_a, digest_b = members_a.get(member), members_b.get(member)
            if digest_a != digest_b:
                changes.append(_change("model", label, _short(digest_a), _short(digest_b)))
        return changes
    # A remote bundle: only the manifest was read, and the file hash includes the save time.
    digest_a = _file_digest(a, a.model["file"])
    digest_b = _file_digest(b, b.model["file"])
    if digest_a != digest_b:
        changes.append(
            _change("model", "file (weights not compared)", _short(digest_a), _short(digest_b))
        )
    return changes


def _tensor_summary(spec: Mapping[str, Any]) -> str:
    return f"{spec['name']}: {_signature_line(spec)}"


def _short(digest: str | None) -> str | None:
    return f"sha256 {digest[:12]}" if digest else None


def _step_changes(a: Manifest, b: Manifest) -> list[dict]:
    changes = []
    for stage in ("preprocess", "postprocess"):
        steps_a, steps_b = getattr(a, stage), getattr(b, stage)
        for i in range(max(len(steps_a), len(steps_b))):
            path = f"{stage}[{i}]"
            if i >= len(steps_b):
                changes.append(_change("steps", path, _step_summary(steps_a[i]), kind="removed"))
                continue
            if i >= len(steps_a):
                changes.append(_change("steps", path, b=_step_summary(steps_b[i]), kind="added"))
                continue
            found = _compare_records("steps", path, steps_a[i], steps_b[i], STEP_FIELDS)
            if not found:
                digest_a = _file_digest(a, steps_a[i].get("file"))
                digest_b = _file_digest(b, steps_b[i].get("file"))
                if digest_a != digest_b:  # same class, other fitted state: refitted
                    found = [_change("steps", f"{path}.fitted", _short(digest_a), _short(digest_b))]
            changes += found
    return changes


def _step_summary(record: Mapping[str, Any]) -> str:
    return f"{record['class']} ({record['serializer']})"


def _object_changes(a: Manifest, b: Manifest) -> list[dict]:
    objects_a = {o["name"]: o for o in a.custom_objects}
    objects_b = {o["name"]: o for o in b.custom_objects}
    changes = []
    for name, record in objects_a.items():
        if name not in objects_b:
            changes.append(_change("custom_objects", name, _object_summary(record), kind="removed"))
    for name, record in objects_b.items():
        if name not in objects_a:
            changes.append(_change("custom_objects", name, b=_object_summary(record), kind="added"))
    for name in objects_a:
        if name in objects_b:
            found = _compare_records(
                "custom_objects", name, objects_a[name], objects_b[name], OBJECT_FIELDS
            )
            if not found:
                digest_a = _file_digest(a, objects_a[name].get("file"))
                digest_b = _file_digest(b, objects_b[name].get("file"))
                if digest_a != digest_b:
                    found = [
                        _change(
                            "custom_objects", f"{name}.code", _short(digest_a), _short(digest_b)
                        )
                    ]
            changes += found
    return changes


def _object_summary(record: Mapping[str, Any]) -> str:
    return f"{record['kind']} {record['module']}.{record['qualname']} (by {record['storage']})"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data} if prefix else {}


def _keyed_changes(section: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict]:
    changes = []
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in b:
            changes.append(_change(section, key, a[key], kind="removed"))
        elif key not in a:
            changes.append(_change(section, key, b=b[key], kind="added"))
        elif a[key] != b[key]:
            changes.append(_change(section, key, a[key], b[key]))
    return changes


def _diff(found_a: _Located, found_b: _Located) -> list[dict]:
    """Every difference between two bundles; version and creation time are not counted."""
    a, b = found_a.manifest, found_b.manifest
    changes = []
    if a.name != b.name:
        changes.append(_change("name", "name", a.name, b.name))
    changes += _schema_changes(a.input_schema, b.input_schema)
    changes += _model_changes(found_a, found_b)
    changes += _step_changes(a, b)
    changes += _object_changes(a, b)
    changes += _keyed_changes("metadata", _flatten(a.metadata), _flatten(b.metadata))
    changes += _keyed_changes("environment", a.environment, b.environment)
    order = list(DIFF_SECTIONS)
    return sorted(changes, key=lambda change: order.index(change["section"]))


def _shown(value: Any, section: str) -> str:
    if section == "metadata":
        return json.dumps(value, sort_keys=True, default=str)
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _change_line(change: Mapping[str, Any]) -> str:
    section, path = change["section"], change["path"]
    if change["change"] == "added":
        return f"  + {path}: {_shown(change['b'], section)}"
    if change["change"] == "removed":
        return f"  - {path}: {_shown(change['a'], section)}"
    a, b = change["a"], change["b"]
    if isinstance(a, list) and isinstance(b, list) and path.endswith("categories"):
        added = [v for v in b if v not in a]
        removed = [v for v in a if v not in b]
        parts = ([f"added {_shown(added, section)}"] if added else []) + (
            [f"removed {_shown(removed, section)}"] if removed else []
        )
        if parts:
            return f"  ~ {path}: " + "; ".join(parts)
    return f"  ~ {path}: {_shown(a, section)} -> {_shown(b, section)}"


@cli.command(context_settings=CONTEXT_SETTINGS, short_help="Show what changed between two bundles.")
@click.argument("a")
@click.argument("b")
@click.option("--version-a", metavar="V", default=None, help="Version (or alias) of A's root.")
@click.option("--version-b", metavar="V", default=None, help="Version (or alias) of B's root.")
@JSON_OPTION
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 when the bundles differ and 0 when they do not (like git diff --exit-code).",
)
def diff(
    a: str,
    b: str,
    version_a: str | None,
    version_b: str | None,
    as_json: bool,
    exit_code: bool,
) -> None:
    """Show what changed from bundle A to bundle B (manifests only; nothing is loaded).

    Compares the input schema (columns added, removed, or changed in kind, dtype,
    categories or missing-value handling), the model signature and weights, the steps,
    the custom objects, the metadata and the environment. Version and creation time are
    not counted as differences. Column ranges (example statistics) are not compared.

    Exits 0 whether or not they differ, unless --exit-code is given: then 1 when they differ.
    """
    found_a, found_b = _read_manifest_at(a, version_a), _read_manifest_at(b, version_b)
    changes = _diff(found_a, found_b)
    manifest_a, manifest_b = found_a.manifest, found_b.manifest
    where_a, where_b = found_a.where, found_b.where
    if as_json:
        _emit_json(
            {
                "a": {"name": manifest_a.name, "version": manifest_a.version, "location": where_a},
                "b": {"name": manifest_b.name, "version": manifest_b.version, "location": where_b},
                "identical": not changes,
                "changes": changes,
            }
        )
    else:
        click.echo(f"--- a: {manifest_a.name} {manifest_a.version} ({where_a})")
        click.echo(f"+++ b: {manifest_b.name} {manifest_b.version} ({where_b})")
        if not changes:
            click.echo("No differences (version and creation time aside).")
        for section, title in DIFF_SECTIONS.items():
            lines = [_change_line(c) for c in changes if c["section"] == section]
            if lines:
                click.echo(_heading(title))
                click.echo("\n".join(lines))
        if changes:
            sections = {c["section"] for c in changes}
            touched = [title for section, title in DIFF_SECTIONS.items() if section in sections]
            click.echo(f"{len(changes)} difference(s) in: {', '.join(touched)}.")
    if exit_code and changes:
        raise click.exceptions.Exit(1)


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
    from . import tabular_io

    in_fmt = _file_format(tabular_io, input_file, input_format, "INPUT", "--input-format")
    out_fmt = _file_format(
        tabular_io, output, output_format, "'-o' / '--output'", "--output-format"
    )
    if not Path(input_file).is_file():
        raise BundleError(f"No input file at {input_file}.")
    if not Path(output).resolve().parent.is_dir():
        raise BundleError(f"The folder of {output} does not exist; create it first.")
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


# ---------------------------------------------------------------------------- serve
@cli.command(context_settings=CONTEXT_SETTINGS, short_help="Serve a bundle over HTTP.")
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
    log_level: str,
) -> None:
    """Serve a bundle over HTTP (Open Inference Protocol V2, /predict, /metrics).

    Runs until interrupted (Ctrl-C or SIGTERM finish the requests in flight). Needs the
    `serve` extra: pip install 'keras-bundle[serve]'.
    """
    try:
        from . import serve as server
    except ImportError as exc:
        raise BundleError(
            f"`bundle serve` needs the 'serve' extra: {exc}\n"
            "Install it with: pip install 'keras-bundle[serve]'"
        ) from exc
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "trusted": trusted,
        "log_level": log_level,
    }
    if max_batch_size is not None:
        options["max_batch_size"] = max_batch_size
    if max_wait_ms is not None:
        options["max_wait_ms"] = max_wait_ms
    server.run(path, **options)


if __name__ == "__main__":  # pragma: no cover - `python -m bundle.cli`
    sys.exit(main())
