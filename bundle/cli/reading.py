"""Reading a bundle's manifest for the commands, and the facts `inspect` and `list` show."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..contract import InputSchema
from ..errors import BundleNotFoundError
from ..format.digest import manifest_digest
from ..format.environment import PACKAGES, capture_environment, compare_environment
from ..format.keras_config import read_model_config
from ..format.layout import MANIFEST_FILE, SIGNATURE_FILE
from ..format.manifest import Manifest, parse_manifest, read_manifest
from ..format.profile import Profile, feature_summary, read_profile, render_profile
from ..format.signing import read_signature
from ..format.snapshot import open_snapshot
from ..format.trust import COMPILE, PREDICT, TrustDecision, decide, executes_code, needed_for
from ..storage import fetch, is_archive_name, is_oci, is_url, oci, open_root, split_alias


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Located:
    """A bundle version's manifest, where it is, its local directory (None if remote), its
    bundle digest and its signature file's facts (None: unsigned, or not looked at)."""

    manifest: Manifest
    where: str
    local: Path | None
    digest: str
    signature: dict[str, Any] | None = None
    checked: bool = False  # whether `signature` was looked for (local and OCI bundles)


def _read_manifest_at(location: str, version: str | None) -> _Located:
    """The manifest of the version at `location`, and where it is; never reads other files.

    For a remote root or version only ``manifest.json`` is downloaded, not the model; for
    an OCI artifact, its config (the manifest) and its signature.
    """
    if is_oci(location):
        described = oci.describe(location, version)
        manifest = parse_manifest(described.manifest_text, source=described.reference)
        signature = None
        if described.signature is not None:
            info = read_signature(Path(SIGNATURE_FILE), described.signature)
            signature = {**info.to_dict(), "file": f"{SIGNATURE_FILE} (OCI referrer)"}
        digest = manifest_digest(described.manifest_text)
        return _Located(manifest, described.reference, None, digest, signature, checked=True)
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
            return _Located(manifest, root.location, None, manifest_digest(data))
        chosen = root.resolve(version)
        where = f"{root.location}/{chosen}"
        data = root.read_manifest_text(chosen)
        manifest = parse_manifest(data, source=f"{where}/{MANIFEST_FILE}")
        return _Located(manifest, where, None, manifest_digest(data))
    path = fetch(location, version)
    manifest = read_manifest(path)
    digest = manifest_digest((path / MANIFEST_FILE).read_bytes())
    return _Located(manifest, str(path), path, digest, _signature_facts(path), checked=True)


def _signature_facts(path: Path) -> dict[str, Any] | None:
    """Who the signature file says signed the bundle (not verified: that needs the key)."""
    if not (path / SIGNATURE_FILE).is_file():
        return None
    return read_signature(path / SIGNATURE_FILE).to_dict()


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
NEEDED = {PREDICT: "needed to predict", COMPILE: "compile only"}


def _trust_cell(unsafe: bool, needed: str) -> str:
    if not unsafe:
        return ""
    return "needs trusted=True" if needed == PREDICT else "skipped without trusted=True"


def _trusted_cell(facts: Mapping[str, Any]) -> str:
    if facts["needs_trusted"]:
        return "needs trusted=True"
    if facts["skipped_without_trust"]:
        return "not needed to predict (the compile state needs it)"
    return "not needed"


def _trust_line(part: Mapping[str, Any]) -> str:
    line = f"  - {part['file'] or part['part']} ({part['part']}): {part['reason']}"
    if part["references"]:
        shown = ", ".join(part["references"][:8])
        more = len(part["references"]) - 8
        line += f" (references {shown}" + (f", ... ({more} more))" if more > 0 else ")")
    return line


def _signature_line(tensor: Mapping[str, Any]) -> str:
    # The same rendering as the model card (bundle/card.py): dtype then the shape tuple.
    return f"{tensor['dtype']} {tuple(tensor['shape'])}"


def _trust_reasons(manifest: Manifest, decision: TrustDecision) -> list[dict[str, Any]]:
    """Every part whose loading runs code the bundle stores or chooses, with why."""
    return [
        {
            "part": part.name,
            "file": part.file,
            "serializer": part.serializer,
            "what": part.record.get("class")
            or f"{part.record.get('module')}.{part.record.get('qualname')}",
            "reason": part.reason,
            "references": part.references,
            "needed_for": part.needed_for,
        }
        for part in decision.unsafe
    ]


def _environment_rows(recorded: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """``package, saved, running, differs`` rows; `differs` is load's own decision
    (`format.environment.is_significant`)."""
    running = capture_environment()
    significant = {d.package for d in compare_environment(recorded, running) if d.significant}
    keys = ["python", "platform", *PACKAGES]
    keys += [key for key in recorded if key not in keys]
    return [
        {
            "package": key,
            "saved": recorded.get(key),
            "running": running.get(key),
            "differs": key in significant,
        }
        for key in keys
    ]


def _steps(manifest: Manifest) -> list[dict[str, Any]]:
    return [
        {
            "stage": stage,
            "name": record["name"],
            "class": record["class"],
            "serializer": record["serializer"],
            "file": record["file"],
            "executes_code": executes_code(record),
            "imports": list(record.get("imports") or []),
        }
        for stage in ("preprocess", "postprocess")
        for record in getattr(manifest, stage)
    ]


def _facts(found: _Located) -> dict[str, Any]:
    """Everything `inspect` reports, as one JSON-ready dict (the text output renders it).

    For a local bundle the trust decision reads the model file's config too, as loading
    does; for a remote one, the manifest alone.
    """
    manifest, local = found.manifest, found.local
    files = manifest.files
    model_config = read_model_config(local / manifest.model["file"]) if local else None
    decision = decide(manifest, model_config=model_config, inside=local)
    trust = _trust_reasons(manifest, decision)
    return {
        "name": manifest.name,
        "version": manifest.version,
        "created": manifest.created,
        "location": found.where,
        "digest": found.digest,
        # None: not looked up (a remote bundle, of which only the manifest is read).
        "signed": found.signature is not None if found.checked else None,
        "signature": found.signature,
        "format": manifest.format,
        "format_version": manifest.format_version,
        "size": sum(int(entry["size"]) for entry in files.values()),
        "files": len(files),
        # The trust decision (bundle.format.trust): parts prediction needs refuse the load
        # without trust; compile-only parts are skipped (no compile state) instead.
        "needs_trusted": bool(decision.refused),
        "trusted_parts": trust,
        "skipped_without_trust": [part.name for part in decision.skipped],
        "environment": _environment_rows(manifest.environment),
        "input_schema": manifest.input_schema,
        "model": {
            "file": manifest.model["file"],
            "serializer": manifest.model.get("serializer", "keras"),
            "executes_code": manifest.model.get("executes_code", False),
            "inputs": manifest.model["inputs"],
            "outputs": manifest.model["outputs"],
            "size": int(files.get(manifest.model["file"], {}).get("size", 0)),
            "includes_optimizer": manifest.model.get("includes_optimizer"),
            "weights_bytes": manifest.model.get("weights_bytes"),
            "optimizer_bytes": manifest.model.get("optimizer_bytes"),
            "backend": manifest.backend,
        },
        "steps": _steps(manifest),
        "custom_objects": [
            {**record, "needed_for": needed_for(record, model_config)}
            for record in manifest.custom_objects
        ],
        "example": manifest.example,
        "metadata": manifest.metadata,
        "profile": dict(manifest.profile) if manifest.profile is not None else None,
    }


def _profile_of(found: _Located) -> Profile | None:
    """The training profile of a local bundle (its two small files), None otherwise."""
    record = found.manifest.profile
    if record is None or found.local is None:
        return None
    # Checked against the manifest before it is read, and never a FIFO or a link.
    only = [record["file"], record["arrays"]]
    with open_snapshot(found.local, manifest=found.manifest, only=only) as snapshot:
        return read_profile(snapshot.path, record)


def _profile_features(profile: Profile) -> list[dict[str, Any]]:
    return [
        {
            "name": feature.name,
            "role": feature.role,
            "kind": feature.kind,
            "missing": feature.missing_rate,
            "summary": feature_summary(feature),
        }
        for feature in profile
    ]


def _signature_state(facts: Mapping[str, Any]) -> str:
    signature = facts["signature"]
    if signature is None:
        return "no" if facts["signed"] is False else "not looked up (remote)"
    return (
        f"by {signature['signer']} ({signature['file']}; not verified here: "
        "bundle verify --public-key)"
    )


def _model_sizes(model: Mapping[str, Any]) -> str | None:
    """The model file's size, its weights' and its optimizer state's (stored or left out)."""
    if model.get("includes_optimizer") is None:  # saved before sizes were recorded
        return None
    head = f"{_human_size(model['size'])} on disk: weights {_human_size(model['weights_bytes'])}"
    state = _human_size(model["optimizer_bytes"])
    if not model["optimizer_bytes"]:
        return f"{head}, no optimizer state (not compiled, or never trained)"
    if model["includes_optimizer"]:
        return (
            f"{head} + optimizer state {state} (training resumes where it stopped; "
            "save(..., include_optimizer=False) leaves it out for serving)"
        )
    return (
        f"{head}; optimizer state ({state}) left out: inference-only, a loaded model "
        "trains on with a fresh optimizer"
    )


def _render_inspect(
    facts: Mapping[str, Any], schema: InputSchema | None, profile: Profile | None = None
) -> str:
    out = [
        _heading(f"{facts['name']} {facts['version']}"),
        _table(
            None,
            [
                ("created", facts["created"]),
                ("location", facts["location"]),
                ("format", f"{facts['format']} {facts['format_version']}"),
                ("size", f"{_human_size(facts['size'])} in {facts['files']} files (+ manifest)"),
                ("digest", facts["digest"]),
                ("signed", _signature_state(facts)),
                ("trusted", _trusted_cell(facts)),
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
    backend = model.get("backend")
    out.append(
        f"  {model['file']} ({model['serializer']}"
        + (
            f", saved on Keras' {backend['name']} backend {backend.get('version') or ''}".rstrip()
            if backend
            else ""
        )
        + (", code in its config: needs trusted=True" if model["executes_code"] else "")
        + ")"
    )
    sizes = _model_sizes(model)
    if sizes:
        out.append(f"  {sizes}")
    out.append(
        _table(
            None,
            [("input", t["name"], _signature_line(t)) for t in model["inputs"]]
            + [("output", t["name"], _signature_line(t)) for t in model["outputs"]],
        )
    )
    out += ["", _heading("Training profile")]
    record = facts.get("profile")
    if profile is not None:
        out.append(render_profile(profile, indent="  "))
    elif record is not None:
        out.append(f"  {record['rows']:,} rows profiled ({record['file']}; not downloaded)")
    else:
        out.append("  (none: saved without a profile; `bundle drift` needs one)")
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
        unsafe = {part["part"] for part in facts["trusted_parts"]}
        out.append(
            _table(
                ("name", "kind", "stored", "object", "needed", "trust"),
                [
                    (
                        o["name"],
                        o["kind"],
                        f"by {o['storage']}",
                        f"{o['module']}.{o['qualname']}",
                        NEEDED[o["needed_for"]],
                        _trust_cell(o["name"] in unsafe, o["needed_for"]),
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
    refused = [p for p in facts["trusted_parts"] if p["needed_for"] == PREDICT]
    skipped = [p for p in facts["trusted_parts"] if p["needed_for"] != PREDICT]
    if refused:
        out.append(
            f"  {len(refused)} part(s) execute stored code when loaded, so "
            "loading needs trusted=True (--trusted):"
        )
        out += [_trust_line(part) for part in refused]
    if skipped:
        out.append(
            f"  {len(skipped)} part(s) are needed only to compile and execute stored code when "
            "loaded: without --trusted they are skipped, and the model loads without its "
            "compile state (prediction does not use them):"
        )
        out += [_trust_line(part) for part in skipped]
    if refused or skipped:
        out.append("  Pass --trusted only for bundles you made or whose source you trust.")
    else:
        out.append("  Every part loads without executing stored code: trusted=True not needed.")
    out += ["", _heading("Environment") + " (saved vs running; * = differs as load warns)"]
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
