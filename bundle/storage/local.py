"""Versioned roots on a local disk: list, resolve and publish versions, crash-safely.

A root holds one directory per version. A version becomes visible in a single rename of a
fully written, fsynced staging directory (``.staging-*``, locked by its writer while it
lives) whose manifest was written last, so a reader never sees a partial version.

Replacing a version (``overwrite=True``) never leaves it loadable from nowhere:

- where the OS can swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``) the new directory and the old one trade places in one step;
  the old one, now at the staging name, is then deleted;
- elsewhere the old directory is first renamed to ``.replaced-<id>-<version>``, which
  resolution and listing still find as the version while ``<version>`` is missing, and
  deleted only once the new one is in place; ``bundle gc`` puts it back after a crash.

Either way a crash at any point leaves the old or the new version loadable, and the only
copy of a version is never in a folder that clean-up deletes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..errors import (
    BundleNotFoundError,
    StorageError,
    StorageWarning,
    UsageError,
    VersionExistsError,
    bullet_list,
)
from ..format.layout import MANIFEST_FILE, REPLACED_PREFIX, STAGING_PREFIX, TRASH_PREFIX
from .durable import exchange, fsync_dir, fsync_tree, work_folder

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_REPLACED = re.compile(rf"^{re.escape(REPLACED_PREFIX)}([0-9a-f]{{32}})-(.+)$")

__all__ = [
    "check_version_name",
    "is_version_dir",
    "list_versions",
    "prepare_root",
    "publish",
    "replaced_version",
    "resolve",
    "staging",
    "version_key",
    "version_path",
]


def version_key(version: str) -> tuple:
    """Sort key: integers numerically, then PEP 440 / semver-like versions, then names.

    ``1.10.0 > 1.9.0`` and ``10 > 9``; a name that is no version sorts before all versions.
    """
    try:
        return (2, Version(version), version)
    except InvalidVersion:
        return (1, version)


def is_version_dir(path: Path) -> bool:
    """True if `path` is a published version: a directory holding a manifest.

    Raises:
        OSError: `path` exists but cannot be looked into (permissions).
    """
    return (Path(path) / MANIFEST_FILE).is_file()


def replaced_version(name: str) -> str | None:
    """The version a ``.replaced-<id>-<version>`` folder name holds, else None."""
    match = _REPLACED.match(name)
    return match.group(2) if match and VERSION_PATTERN.match(match.group(2)) else None


def list_versions(root: Path) -> list[str]:
    """The published versions under `root`, lowest first.

    Staging and trash directories are ignored. A version set aside by an overwrite that has
    not finished (see the module docstring) counts while its own name is missing. A
    directory that cannot be read is skipped with a `StorageWarning` naming it: one bad
    folder does not hide every other version.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    versions: set[str] = set()
    set_aside: set[str] = set()
    for entry in _entries(root):
        if entry.name.startswith("."):
            version = replaced_version(entry.name)
            if version is not None and _readable_version(Path(entry.path)):
                set_aside.add(version)
        elif _readable_version(Path(entry.path)):
            versions.add(entry.name)
    for version in set_aside - versions:
        if not (root / version).exists():
            versions.add(version)
    return sorted(versions, key=version_key)


def version_path(root: Path, version: str) -> Path | None:
    """Where the published `version` under `root` is: ``root/version``, or its set-aside copy.

    Returns None when `version` is not published there (or is not a version name).

    Raises:
        StorageError: ``root/version`` exists but cannot be read.
    """
    root = Path(root)
    if not VERSION_PATTERN.match(version) or version in (".", ".."):
        return None
    target = root / version
    try:
        if is_version_dir(target):
            return target
    except OSError as exc:
        raise _unreadable(target, exc, version=version) from exc
    if target.exists():
        return None
    return _set_aside_copy(root, version)


def _set_aside_copy(root: Path, version: str) -> Path | None:
    """The newest ``.replaced-*-<version>`` folder with a manifest, if any."""
    copies = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if replaced_version(entry.name) == version and _readable_version(Path(entry.path)):
                copies.append(Path(entry.path))
    return max(copies, key=lambda p: p.stat().st_ctime, default=None)


def resolve(location: Path, version: str | None = None) -> Path:
    """The version directory meant by a version directory, or a root plus optional version.

    Raises:
        BundleNotFoundError: nothing published there, or no such version.
        StorageError: the version's directory cannot be read.
    """
    location = Path(location)
    if _is_version_location(location):
        if version is not None and location.name != version:
            raise BundleNotFoundError(
                f"{location} is the bundle version {location.name!r}, not {version!r}.\n"
                f"Pass its root ({location.parent}) with version={version!r}.",
                location=str(location),
                available=[location.name],
            )
        return location
    if version is None and not location.exists():
        moving = version_path(location.parent, location.name)  # a version being replaced
        if moving is not None:
            return moving
    if version is not None:
        found = version_path(location, version)
        if found is not None:
            return found
        available = list_versions(location)
        raise BundleNotFoundError(
            f"No version {version!r} under {location}."
            + (f" Versions there:\n{bullet_list(reversed(available))}" if available else ""),
            location=str(location),
            available=available,
        )
    available = list_versions(location)
    if not available:
        what = "does not exist" if not location.exists() else "holds no published bundle version"
        raise BundleNotFoundError(
            f"{location} {what}: expected a bundle version directory (with {MANIFEST_FILE}) "
            "or a root of version directories.",
            location=str(location),
        )
    return version_path(location, available[-1]) or location / available[-1]


def _is_version_location(location: Path) -> bool:
    try:
        return is_version_dir(location)
    except OSError as exc:
        raise _unreadable(location, exc) from exc


def _entries(root: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(root) as items:
            return list(items)
    except OSError as exc:
        raise StorageError(
            f"Cannot list the versions under {root}: {exc.strerror or exc}.\n"
            "Fix the folder's permissions, or ask its owner to."
        ) from exc


def _readable_version(path: Path) -> bool:
    """True if `path` is a version; False (with a warning) if it cannot be looked into."""
    try:
        return is_version_dir(path)
    except OSError as exc:
        warnings.warn(
            StorageWarning(
                f"Skipped {path}: it cannot be read ({exc.strerror or exc}). The other "
                "versions are listed; fix its permissions to see it.",
                path=str(path),
            ),
            stacklevel=3,
        )
        return False


def _unreadable(path: Path, exc: OSError, *, version: str | None = None) -> StorageError:
    what = f"version {version!r} at {path}" if version else str(path)
    return StorageError(
        f"Cannot read {what}: {exc.strerror or exc}.\n"
        "Fix its permissions (it must be readable by this user), or ask its owner to."
    )


def prepare_root(root: Path) -> Path:
    """Create `root` (and its parents) if missing; refuse clearly if a file is in the way.

    Raises:
        StorageError: `root`, or a folder above it, is a file.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), root)
        where = "it is" if blocker == root else f"{blocker} is"
        raise StorageError(
            f"Cannot save into {root}: {where} a file, not a folder.\n"
            "Pass a folder as the root of versions (it is created if missing), or move "
            "that file away."
        ) from exc
    except OSError as exc:
        raise StorageError(f"Cannot create the root {root}: {exc.strerror or exc}.") from exc
    return root


@contextmanager
def staging(root: Path) -> Iterator[Path]:
    """A locked, hidden directory under `root` to write a version into before publishing.

    Removed at the end unless it was published (renamed away). A killed save leaves it
    behind, unlocked: `bundle gc` reclaims it.
    """
    root = prepare_root(root)
    with work_folder(root, STAGING_PREFIX) as path:
        yield path


def next_version(root: Path) -> str:
    """One more than the highest integer name under `root` (``"1"`` for a new root).

    Every entry counts, not only published versions: a directory named ``3`` without a
    manifest (a copy in progress, a user's folder) still blocks the rename onto ``3``, and a
    version set aside mid-overwrite still holds its number.
    """
    root = Path(root)
    names = [entry.name for entry in root.iterdir()] if root.is_dir() else []
    names += [v for v in map(replaced_version, names) if v is not None]
    integers = [int(name) for name in names if name.isascii() and name.isdigit()]
    return str(max(integers, default=0) + 1)


def check_version_name(version: str) -> str:
    """Refuse version strings that are not safe directory names."""
    if not VERSION_PATTERN.match(version) or version in (".", ".."):
        raise UsageError(
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
    `VersionExistsError` is raised unless `overwrite`: then the new directory replaces the
    old one as the module docstring describes.

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
        raise StorageError(f"Could not find a free version number under {root}.")
    finalize(staging, version)
    fsync_tree(staging)
    target = root / version
    if version_path(root, version) is not None:
        if not overwrite:
            raise _exists(root, version, target)
        _replace(staging, target)
        return target
    if _try_rename(staging, target):
        return target
    if target.exists() and not is_version_dir(target):
        raise VersionExistsError(
            f"{target} exists but is not a bundle version (it has no {MANIFEST_FILE}): "
            "something else uses that name.\nMove it away, or save under another version.",
            version=version,
            path=str(target),
        )
    raise _exists(root, version, target)


def _exists(root: Path, version: str, target: Path) -> VersionExistsError:
    return VersionExistsError(
        f"Version {version!r} already exists under {root}; published versions are immutable.\n"
        "Save under a new version, or pass overwrite=True to replace it.",
        version=version,
        path=str(target),
    )


def _replace(staging: Path, target: Path) -> None:
    """Put the complete `staging` at `target`, whose old version stays loadable meanwhile."""
    root = target.parent
    if not target.exists():
        # A crashed overwrite left the version set aside only: take the name back directly.
        # The set-aside copy is then superseded, and `bundle gc` removes it.
        if not _try_rename(staging, target):
            raise _exists(root, target.name, target)
        return
    if exchange(staging, target):
        fsync_dir(root)
        _discard(staging)  # the staging name now holds the old version
        return
    aside = root / f"{REPLACED_PREFIX}{uuid.uuid4().hex}-{target.name}"
    os.rename(target, aside)
    fsync_dir(root)
    try:
        os.rename(staging, target)
    except BaseException:
        # Nothing lost: the new version did not go in, so the old one goes back.
        with contextlib.suppress(OSError):
            if not target.exists():
                os.rename(aside, target)
        raise
    fsync_dir(root)
    _discard(aside)


def _discard(path: Path) -> None:
    """Delete a superseded version folder: renamed to ``.trash-*`` first, so that a crash
    mid-delete never leaves a half-deleted folder under a name resolution reads."""
    trash = path.parent / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return  # already reclaimed by `bundle gc`
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


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
