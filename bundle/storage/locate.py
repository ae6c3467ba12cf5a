"""Any location form -> a local, verified-ready version directory.

Every path argument of the public API that reads a bundle goes through `fetch`: a version
directory, a root (its highest version, or a version or alias), ``root@alias``, an archive
(extracted into the cache, keyed by its sha256), any of these behind an fsspec URL
(downloaded into the cache), or an OCI artifact (``oci://``, pulled into the cache by
digest).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleError, BundleNotFoundError, UsageError
from ..format.digest import check_digest, digest_of, require_digest
from ..format.integrity import hash_file, verify_files, verify_files_for
from ..format.manifest import Manifest, read_manifest
from . import cache, oci
from . import local as store
from .archives import extract_archive, is_archive_name
from .paths import is_url, local_path, split_alias
from .roots import open_root

__all__ = ["Located", "fetch", "fetch_verified", "locate"]


@dataclass(frozen=True)
class Located:
    """A local version directory, and how it was found.

    Attributes:
        path: the local version directory (itself, a download or an extraction).
        via: ``"root"`` when a root resolved it (highest version, a version or an alias:
            its directory name is the version the root publishes), ``"directory"`` when the
            location was the version directory itself, ``"archive"`` for an archive.
    """

    path: Path
    via: str


def fetch(
    location: str | Path,
    version: str | None = None,
    *,
    digest: str | None = None,
    **storage_options: Any,
) -> Path:
    """A local version directory for any location form (see the module docstring).

    `digest` (a bundle digest) lets an OCI pull refuse other content before it downloads a
    file; for the other forms the caller compares digests (`bundle.format.digest`).

    Raises:
        BundleNotFoundError: nothing there, or no such version or alias.
        DigestMismatchError: an OCI artifact is not the bundle `digest` names.
    """
    return locate(location, version, digest=digest, **storage_options).path


def locate(
    location: str | Path,
    version: str | None = None,
    *,
    digest: str | None = None,
    **storage_options: Any,
) -> Located:
    """Like `fetch`, also saying how the version directory was found.

    Raises:
        BundleNotFoundError: nothing there, or no such version or alias.
        DigestMismatchError: an OCI artifact is not the bundle `digest` names.
    """
    if oci.is_oci(location):  # the cache names the directory by the version it holds
        return Located(oci.fetch(str(location), version, digest=digest, **storage_options), "root")
    text, alias = split_alias(location)
    if alias is not None:
        if version is not None and version != alias:
            raise UsageError(f"Pass either {location!r} or version={version!r}, not both.")
        version = alias
    if is_archive_name(text):
        return Located(_extracted(text, **storage_options), "archive")
    root = open_root(text, **storage_options)
    if root.is_version() or (not root.is_remote and _being_replaced(root.local)):
        if not root.is_remote:
            return Located(store.resolve(root.local, version), "directory")
        parent, _, name = root.location.rpartition("/")
        return Located(open_root(parent, **storage_options).local_copy(name), "directory")
    return Located(root.local_copy(root.resolve(version)), "root")


def fetch_verified(
    location: str | Path,
    version: str | None = None,
    *,
    digest: str | None = None,
    **storage_options: Any,
) -> tuple[Path, Manifest]:
    """`fetch`, then the checks every reader makes before it reads a part: the manifest is
    valid, the bundle digest is `digest` (when given), and every file matches the manifest.

    Raises:
        DigestMismatchError: the bundle is not the one `digest` names.
        IntegrityError: a file is missing, unlisted or changed.
    """
    if digest is not None:
        check_digest(digest)
    path = fetch(location, version, digest=digest, **storage_options)
    manifest = read_manifest(path)
    if digest is not None:
        require_digest(digest, digest_of(path), label=manifest.label, where=str(location))
    verify_files(path, manifest.files, label=manifest.label)
    return path, manifest


def _being_replaced(path: Path) -> bool:
    """True for ``<root>/<version>`` while an overwrite has it set aside (see `local`)."""
    return not path.exists() and store.version_path(path.parent, path.name) is not None


def _extracted(location: str, **storage_options: Any) -> Path:
    """Extract an archive (local or URL) into the cache, once per content hash.

    A cached extraction is verified against its manifest on every use: one damaged on disk
    is discarded and extracted again from the archive.
    """
    if is_url(location):
        import fsspec

        with (
            fsspec.open(location, "rb", **storage_options) as remote,
            tempfile.NamedTemporaryFile(suffix=Path(location).name, delete=False) as tmp,
        ):
            shutil.copyfileobj(remote, tmp, 1 << 20)
        source = Path(tmp.name)
    else:
        source = local_path(location)
        if not source.is_file():
            raise BundleNotFoundError(f"No archive at {location}.", location=location)
    try:
        target = cache.entry("archives", hash_file(source))
        folder = _single_folder(target)
        if folder is not None and cache.usable(folder):
            return folder
        if target.exists():
            cache.discard(target)
        with cache.filling(target, cache.EXTRACT_PREFIX) as work:
            folder = extract_archive(source, work)
            _check_extracted(folder, location)
            cache.install(work, target)
        return target / folder.name
    finally:
        if is_url(location):
            source.unlink(missing_ok=True)


def _single_folder(target: Path) -> Path | None:
    """The one folder of a cache entry (its name may start with a dot), or None."""
    try:
        folders = [p for p in target.iterdir() if p.is_dir()]
    except OSError:
        return None
    return folders[0] if len(folders) == 1 else None


def _check_extracted(folder: Path, location: str) -> None:
    """A fresh extraction must match its manifest, else the archive itself is bad.

    A manifest that does not read is left to the loader, which names what is wrong with it.
    """
    try:
        manifest = read_manifest(folder)
    except BundleError:
        return
    verify_files_for(
        folder, manifest.files, label=manifest.label, purpose=f"The archive {location} is damaged."
    )
