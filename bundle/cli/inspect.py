"""`bundle inspect`, `bundle verify` and `bundle list`."""

from __future__ import annotations

from pathlib import Path

import click

import bundle as api

from ..errors import BundleNotFoundError, UsageError
from ..format.layout import MANIFEST_FILE
from ..storage import is_oci, is_url
from .app import (
    CONTEXT_SETTINGS,
    DIGEST_OPTION,
    JSON_OPTION,
    TRUSTED_OPTION,
    VERSION_OPTION,
    _emit_json,
    cli,
    signature_options,
)
from .reading import (
    _facts,
    _human_size,
    _input_schema,
    _profile_features,
    _profile_of,
    _read_manifest_at,
    _render_inspect,
    _table,
)


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
    the steps and custom objects, which parts need --trusted and why, the training profile
    (per feature: kind, missing share, range or top values), and the training environment
    next to the running one. The bundle's README.md model card holds the same
    facts. With a remote PATH only manifest.json is downloaded.
    """
    found = _read_manifest_at(path, version)
    manifest = found.manifest
    facts = _facts(found)
    profile = _profile_of(found)
    if profile is not None:
        facts["profile"]["features"] = _profile_features(profile)
    if as_json:
        _emit_json(facts)
        return
    click.echo(_render_inspect(facts, _input_schema(manifest), profile))


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
@DIGEST_OPTION
@signature_options
@JSON_OPTION
def verify(
    path: str,
    version: str | None,
    trusted: bool,
    no_load: bool,
    digest: str | None,
    public_key: str | None,
    certificate_chain: tuple[str, ...],
    signature: str | None,
    as_json: bool,
) -> None:
    """Check a bundle: manifest, file hashes, (with --digest) its digest, (with --public-key
    or --certificate-chain) its signature, and (unless --no-load) that it loads and replays
    its saved example outputs.

    Prints a PASS/FAIL line per check. Exit code 0 if every check passed, 1 otherwise.
    """
    report = api.verify(
        path,
        version=version,
        trusted=trusted,
        load=not no_load,
        digest=digest,
        public_key=public_key,
        certificate_chain=list(certificate_chain) or None,
        signature=signature,
    )
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
            raise UsageError(
                f"{root} is one bundle version ({local.name!r}), not a root of versions.\n"
                f"List its root instead: bundle list {local.parent}"
            )
        if not local.is_dir():
            raise BundleNotFoundError(f"{root} does not exist.", location=root)
    infos = api.list_versions(root)
    _name_leftovers(root)
    if as_json:
        _emit_json(
            [
                {
                    "version": info.version,
                    "created": info.created,
                    "size": info.size,
                    "aliases": list(info.aliases),
                    "location": info.location,
                    "digest": info.digest,
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
            ("version", "created", "size", "digest", "aliases"),
            [
                (i.version, i.created, _human_size(i.size), _short(i.digest), ", ".join(i.aliases))
                for i in infos
            ],
            indent="",
        )
    )


def _short(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits, as registries abbreviate digests."""
    return digest[: len("sha256:") + 12]


def _name_leftovers(root: str) -> None:
    """Name what interrupted saves left under ROOT (on stderr: stdout is the listing)."""
    if is_oci(root):
        return
    report = api.gc(root)
    if not report:
        return
    count = len(report.leftovers)
    noun = "leftover of an interrupted save" if count == 1 else "leftovers of interrupted saves"
    click.echo(f"{count} {noun} ({_human_size(report.size)}):", err=True)
    for item in report.leftovers:
        click.echo(f"- {item.location}: {item.what}", err=True)
    click.echo(f"Reclaim them with: bundle gc {root} --delete", err=True)
