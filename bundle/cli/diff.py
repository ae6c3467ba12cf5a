"""`bundle diff`: what changed between two bundle versions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import click

from ..format.manifest import Manifest
from .app import CONTEXT_SETTINGS, JSON_OPTION, _emit_json, cli
from .reading import _heading, _Located, _read_manifest_at, _signature_line

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
