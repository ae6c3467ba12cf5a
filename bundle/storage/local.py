"""Versioned roots: resolve a location to a version directory, and publish atomically.

A root holds one directory per version. A version becomes visible in a single
``rename`` of a fully written, fsynced staging directory whose manifest was written last,
so a reader never sees a partial version and a crash leaves only a hidden
``.staging-*`` directory behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..errors import BundleNotFoundError, VersionExistsError, bullet_list
from ..format.layout import MANIFEST_FILE, STAGING_PREFIX, TRASH_PREFIX
from .durable import fsync_dir, fsync_tree

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

__all__ = ["is_version_dir", "list_versions", "publish", "resolve", "staging_dir", "version_key"]


def version_key(version: str) -> tuple:
    """Sort key: integers numerically, then PEP 440 / semver-like versions, then names.

    ``1.10.0 > 1.9.0`` and ``10 > 9``; a name that is no version sorts before all versions.
    """
    try:
        return (2, Version(version), version)
    except InvalidVersion:
        return (1, version)


def is_version_dir(path: Path) -> bool:
    """True if `path` is a published version: a directory holding a manifest."""
    return (Path(path) / MANIFEST_FILE).is_file()


def list_versions(root: Path) -> list[str]:
    """The published versions under `root`, lowest first. Staging directories are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    versions = [
        entry.name
        for entry in root.iterdir()
        if not entry.name.startswith(".") and is_version_dir(entry)
    ]
    return sorted(versions, key=version_key)


def resolve(location: Path, version: str | None = None) -> Path:
    """The version directory meant by a version directory, or a root plus optional version.

    Raises:
        BundleNotFoundError: nothing published there, or no such version.
    """
    location = Path(location)
    if is_version_dir(location):
        if version is not None and location.name != version:
            raise BundleNotFoundError(
                f"{location} is the bundle version {location.name!r}, not {version!r}.\n"
                f"Pass its root ({location.parent}) with version={version!r}.",
                location=str(location),
                available=[location.name],
            )
        return location
    available = list_versions(location)
    if version is not None:
        if version in available:
            return location / version
        raise BundleNotFoundError(
            f"No version {version!r} under {location}."
            + (f" Versions there:\n{bullet_list(reversed(available))}" if available else ""),
            location=str(location),
            available=available,
        )
    if not available:
        what = "does not exist" if not location.exists() else "holds no published bundle version"
        raise BundleNotFoundError(
            f"{location} {what}: expected a bundle version directory (with {MANIFEST_FILE}) "
            "or a root of version directories.",
            location=str(location),
        )
    return location / available[-1]


STALE_AFTER_SECONDS = 24 * 3600


def staging_dir(root: Path) -> Path:
    """A new hidden directory under `root` to write a version into before publishing.

    Staging directories untouched for a day are removed first: they are what a save that
    crashed left behind (a live save touches its directory every few seconds at most).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)
    path = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    path.mkdir()
    return path


def remove_stale_staging(root: Path, *, older_than: float = STALE_AFTER_SECONDS) -> list[str]:
    """Delete staging and trash directories under `root` untouched for `older_than` seconds."""
    now = time.time()
    removed = []
    for entry in Path(root).iterdir():
        if not entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) or not entry.is_dir():
            continue
        try:
            newest = max([entry.stat().st_mtime, *(p.stat().st_mtime for p in entry.rglob("*"))])
        except OSError:  # removed meanwhile by its own writer
            continue
        if now - newest > older_than:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def next_version(root: Path) -> str:
    """One more than the highest integer name under `root` (``"1"`` for a new root).

    Every entry counts, not only published versions: a directory named ``3`` without a
    manifest (a copy in progress, a user's folder) still blocks the rename onto ``3``.
    """
    root = Path(root)
    names = [entry.name for entry in root.iterdir()] if root.is_dir() else []
    integers = [int(name) for name in names if name.isascii() and name.isdigit()]
    return str(max(integers, default=0) + 1)


def check_version_name(version: str) -> str:
    """Refuse version strings that are not safe directory names."""
    if not VERSION_PATTERN.match(version) or version in (".", ".."):
        raise ValueError(
            f"Version {version!r} is not a valid version name: use letters, digits and "
            "'.', '_', '+', '-' (at most 128 characters), e.g. '1.2.0' or '7'."
        )
    return version


def publish(
    staging: Path,
    root: Path,
    version: str | None,
    *,
    finalize: Callable[[Path, str], None],
    overwrite: bool = False,
) -> Path:
    """Move a fully written staging directory into place as ``<root>/<version>``.

    `finalize(staging, version)` writes the version-specific files (the manifest last) just
    before each rename attempt. Without a version, the next integer is taken; if another
    process publishes it first, the next one is tried. With an explicit version that exists,
    `VersionExistsError` is raised unless `overwrite` (the old version is moved aside, the
    new one renamed in, then the old one deleted).

    Raises:
        VersionExistsError: the version exists and `overwrite` is False.
    """
    staging, root = Path(staging), Path(root)
    if version is None:
        for _attempt in range(1000):
            candidate = next_version(root)
            finalize(staging, candidate)
            fsync_tree(staging)
            if _try_rename(staging, root / candidate):
                return root / candidate
        raise RuntimeError(f"Could not find a free version number under {root}.")
    finalize(staging, version)
    fsync_tree(staging)
    target = root / version
    if overwrite and is_version_dir(target):
        trash = root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
        os.rename(target, trash)
        try:
            published = _try_rename(staging, target)
        except BaseException:
            # Nothing lost: the new version did not go in, so the old one goes back.
            if not target.exists():
                os.rename(trash, target)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        if published:
            return target
    elif _try_rename(staging, target):
        return target
    if target.exists() and not is_version_dir(target):
        raise VersionExistsError(
            f"{target} exists but is not a bundle version (it has no {MANIFEST_FILE}): "
            "something else uses that name.\nMove it away, or save under another version.",
            version=version,
            path=str(target),
        )
    raise VersionExistsError(
        f"Version {version!r} already exists under {root}; published versions are immutable.\n"
        "Save under a new version, or pass overwrite=True to replace it.",
        version=version,
        path=str(target),
    )


def _try_rename(source: Path, target: Path) -> bool:
    """Rename a directory onto a name that must not exist yet; False if it does."""
    if target.exists():
        return False
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    fsync_dir(target.parent)
    return True
