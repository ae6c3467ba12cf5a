"""Model releases: archive a bundle, tag versions with aliases, list and verify them.

These functions work on locations (local paths and fsspec URLs) and, except `verify` with
``load=True``, never import TensorFlow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .errors import BundleError, IntegrityError
from .format.manifest import Manifest, read_manifest
from .format.verification import Check, VerifyReport, files_check
from .storage import VersionInfo, fetch, is_url, open_root, write_archive

__all__ = ["archive", "list_versions", "tag", "verify"]


def archive(
    location: str | Path, output: str | Path, *, version: str | None = None, **storage_options: Any
) -> Path | str:
    """Write a bundle version as a reproducible ``.tar.gz`` or ``.zip`` release file.

    The same bundle always gives a byte-identical file. `output` may be an fsspec URL.

    Example:
        >>> bundle.archive("models/churn", "churn-1.0.0.tar.gz", version="1.0.0")
    """
    source = fetch(location, version, **storage_options)
    manifest = read_manifest(source)
    root_name = f"{manifest.name}-{manifest.version}"
    if not is_url(output):
        write_archive(source, Path(output), root_name=root_name)
        return Path(output)
    import fsspec

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / Path(str(output)).name
        write_archive(source, local, root_name=root_name)
        fs, path = fsspec.core.url_to_fs(str(output), **storage_options)
        fs.put_file(str(local), path)
    return str(output)


def tag(root: str | Path, alias: str, version: str, **storage_options: Any) -> dict[str, Any]:
    """Point `alias` at `version` under `root`; moving an alias is atomic, history kept.

    Then ``Bundle.load("root@alias")`` or ``Bundle.load(root, version=alias)`` follow it.

    Returns:
        The alias record: ``{"alias", "version", "updated", "history": [...]}``.
    """
    return open_root(root, **storage_options).write_alias(alias, version)


def list_versions(root: str | Path, **storage_options: Any) -> list[VersionInfo]:
    """The published versions under `root`, lowest first, with creation time, size, aliases."""
    target = open_root(root, **storage_options)
    aliases = target.list_aliases()
    infos = []
    for version in target.list_versions():
        manifest = _manifest_of(target, version)
        size = sum(int(entry["size"]) for entry in manifest.files.values())
        infos.append(
            VersionInfo(
                version=version,
                created=manifest.created,
                size=size,
                aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
                location=f"{target.location.rstrip('/')}/{version}",
            )
        )
    return infos


def _manifest_of(target: Any, version: str) -> Manifest:
    from .format.manifest import parse_manifest

    return parse_manifest(target.read_manifest_text(version), source=f"{version}/manifest.json")


def verify(
    location: str | Path,
    *,
    version: str | None = None,
    trusted: bool = False,
    load: bool = True,
    **storage_options: Any,
) -> VerifyReport:
    """Verify a bundle: manifest, hashes and, with `load`, every part and the golden outputs.

    With ``load=False`` only the manifest and the files are checked (no TensorFlow).
    """
    try:
        path = fetch(location, version, **storage_options)
    except IntegrityError as exc:  # a download or archive that does not match, never cached
        return VerifyReport(str(location), [Check("files", False, str(exc))])
    try:
        manifest = read_manifest(path)
    except BundleError as exc:
        return VerifyReport(str(location), [Check("manifest", False, str(exc))])
    checks = [Check("manifest", True, f"format {manifest.format_version}, schema valid")]
    files = files_check(path, manifest)
    checks.append(files)
    if not load or not files.passed:
        return VerifyReport(manifest.label, checks)
    from .core import Bundle

    try:
        loaded = Bundle.load(path, trusted=trusted)
    except IntegrityError as exc:  # changed between the two checks
        return VerifyReport(manifest.label, [*checks, Check("load", False, str(exc))])
    except BundleError as exc:
        return VerifyReport(manifest.label, [*checks, Check("load", False, str(exc))])
    report = loaded.verify()
    # The loaded bundle re-checked the files itself; keep the first, detailed check only.
    return VerifyReport(manifest.label, [*checks, *[c for c in report.checks if c.name != "files"]])
