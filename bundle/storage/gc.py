"""What killed saves, overwrites and taggers left behind, found and (on request) reclaimed.

Nothing published is ever a leftover, and nothing a live process is working on:

- local roots: ``.staging-*`` folders whose writer is gone (a live writer holds the
  folder's lock; the kernel drops it when the process dies, even by ``kill -9``),
  ``.trash-*`` folders, ``.replaced-<id>-<version>`` copies (deleted once ``<version>`` is
  back in place, *restored* to ``<version>`` when a crash left the version only there),
  and temp files of killed taggers;
- object storage: generations that no manifest names (an upload killed before its
  manifest, or the old files of an overwrite killed before it deleted them), files of an
  earlier release's layout that no manifest names, and the version claims earlier releases
  made. Object stores cannot tell a dead writer from a slow one, so these count only once
  untouched for ``older_than`` (24 hours unless told otherwise);
- superseded alias records (the latest record carries the whole history);
- the local cache's work folders (downloads, extractions, local copies of saves to object
  storage) whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import BundleError, StorageWarning
from ..format.layout import (
    ALIASES_DIR,
    CLAIMS_DIR,
    GENERATION_PREFIX,
    MANIFEST_FILE,
    STAGING_PREFIX,
    TRASH_PREFIX,
)
from ..format.manifest import parse_manifest
from . import cache
from . import local as store
from .aliases import TEMP_PREFIX
from .durable import in_use, quiet
from .paths import cache_dir
from .remote import RemoteVersions, generation_of
from .roots import Root

__all__ = ["REMOTE_OLDER_THAN", "GcReport", "Leftover", "collect", "reclaim"]

REMOTE_OLDER_THAN = 24 * 3600.0
"""Default age (seconds) after which an unreferenced object counts as abandoned.

Longer than any upload, so a save in progress (whose newest object is younger) is never
taken for a dead one.
"""
_STARTING = 60.0  # an empty, unlocked staging folder younger than this is a save starting


@dataclass(frozen=True)
class Leftover:
    """One thing left behind: where, what, how big, how old, and what gc does with it."""

    location: str
    what: str
    size: int
    age: float  # seconds since it was last written
    action: str = "delete"  # or "restore": put a set-aside version back in place
    kind: str = field(default="path", repr=False)  # "path", "objects" or "alias record"
    targets: tuple[str, ...] = field(default=(), repr=False)  # the objects or record key


@dataclass(frozen=True)
class GcReport:
    """What `bundle.gc` found under a root and, unless a dry run, reclaimed.

    Attributes:
        root: the root's location.
        leftovers: what is (or was) reclaimed, oldest first.
        skipped: what looked like a leftover but belongs to live work (locked or too
            recent), with the reason.
        dry_run: True if nothing was changed.
    """

    root: str
    leftovers: tuple[Leftover, ...]
    skipped: tuple[str, ...]
    dry_run: bool

    @property
    def size(self) -> int:
        """Bytes the leftovers take."""
        return sum(item.size for item in self.leftovers)

    def __bool__(self) -> bool:
        return bool(self.leftovers)


def collect(root: Root, *, older_than: float | None = None) -> GcReport:
    """Find the leftovers under `root` (a dry run: nothing is changed).

    `older_than` (seconds) is the least age of anything reclaimed; by default 0 on a local
    disk, where locks tell live work apart, and `REMOTE_OLDER_THAN` on object storage.
    """
    found: list[Leftover] = []
    skipped: list[str] = []
    if root.remote is None:
        _local(root, older_than or 0.0, found, skipped)
    else:
        limit = REMOTE_OLDER_THAN if older_than is None else older_than
        _remote(root.remote, limit, found, skipped)
    _aliases(root, found)
    _cache(older_than or 0.0, found, skipped)
    found.sort(key=lambda item: -item.age)
    return GcReport(root.location, tuple(found), tuple(skipped), dry_run=True)


def reclaim(root: Root, report: GcReport) -> GcReport:
    """Delete (or restore) every leftover of `report`, re-checking each one first."""
    done = []
    for item in report.leftovers:
        if _apply(root, item):
            done.append(item)
    return GcReport(report.root, tuple(done), report.skipped, dry_run=False)


# ---------------------------------------------------------------------------- local roots
def _local(root: Root, older_than: float, found: list[Leftover], skipped: list[str]) -> None:
    folder = root.local
    if not folder.is_dir():
        return
    with quiet(folder) as idle:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".")]
        live_save = not idle or any(
            e.name.startswith(STAGING_PREFIX) and in_use(Path(e.path)) for e in entries
        )
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and entry.is_dir():
                what = (
                    "an interrupted save"
                    if entry.name.startswith(STAGING_PREFIX)
                    else "an overwritten version being deleted"
                )
                _work(path, what, older_than, idle, found, skipped)
            elif (version := store.replaced_version(entry.name)) is not None:
                _set_aside(folder, path, version, live_save, found, skipped)
    aliases = folder / ALIASES_DIR
    for parent in [aliases, *(p for p in aliases.glob("*") if p.is_dir())]:
        with quiet(parent) as idle:
            for path in [*parent.glob(".*.tmp"), *parent.glob(f"{TEMP_PREFIX}*")]:
                _work(path, "a temp file of an interrupted tag", older_than, idle, found, skipped)


def _work(
    path: Path,
    what: str,
    older_than: float,
    idle: bool,
    found: list[Leftover],
    skipped: list[str],
) -> None:
    """A folder (or file) of some process's work: a leftover once its process is gone.

    `idle`: nothing was starting in its parent while it was looked at (see
    `durable.quiet`); else an empty, unlocked one may be a save starting, unless old.
    """
    if in_use(path):
        skipped.append(f"{path}: in use by a running process")
        return
    size, newest = _tree(path)
    age = time.time() - newest
    empty = size == 0 and (not path.is_dir() or not any(path.iterdir()))
    if not idle and empty and age < _STARTING:
        skipped.append(f"{path}: possibly a save just starting")
    elif age < older_than:
        skipped.append(f"{path}: younger than {_duration(older_than)}")
    else:
        found.append(Leftover(str(path), what, size, age))


def _set_aside(
    root: Path,
    path: Path,
    version: str,
    live_save: bool,
    found: list[Leftover],
    skipped: list[str],
) -> None:
    size, newest = _tree(path)
    age = time.time() - newest
    try:
        published = store.is_version_dir(root / version)
    except OSError:
        return  # unreadable: leave it alone
    if published:
        what = f"the old copy of version {version!r}, replaced"
        found.append(Leftover(str(path), what, size, age))
    elif live_save:
        skipped.append(f"{path}: version {version!r} set aside while a save is running")
    elif store.is_version_dir(path):
        what = f"version {version!r}, set aside by an interrupted overwrite"
        found.append(Leftover(str(path), what, size, age, action="restore"))


def _tree(path: Path) -> tuple[int, float]:
    """(bytes, newest mtime) of a file or of everything below a folder."""
    size, newest = 0, 0.0
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        with contextlib.suppress(OSError):
            info = item.lstat()
            newest = max(newest, info.st_mtime)
            if not item.is_dir():
                size += info.st_size
    return size, newest


# ---------------------------------------------------------------------------- object storage
def _remote(
    remote: RemoteVersions, older_than: float, found: list[Leftover], skipped: list[str]
) -> None:
    fs = remote.fresh()
    try:
        listing = fs.find(remote.base, detail=True)
    except FileNotFoundError:
        return
    prefix = f"{remote.base}/" if remote.base else ""
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for path, info in listing.items():
        relative = path[len(prefix) :] if path.startswith(prefix) else path
        top, _, rest = relative.partition("/")
        if top == CLAIMS_DIR and rest:
            groups.setdefault((top, rest), []).append((path, info))
        elif not top.startswith(".") and rest and rest != MANIFEST_FILE:
            sub = rest.split("/", 1)[0] if rest.startswith(GENERATION_PREFIX) else ""
            groups.setdefault((top, sub), []).append((path, info))
    referenced: dict[str, tuple[str, set[str]] | None] = {}
    for (top, sub), objects in sorted(groups.items()):
        if top == CLAIMS_DIR:
            what = f"the claim of version {sub!r} by an earlier release"
            _objects(f"{remote.location}/{top}/{sub}", what, objects, older_than, found, skipped)
            continue
        if top not in referenced:
            referenced[top] = _referenced(remote, top)
        if referenced[top] is None:
            continue
        generation, flat = referenced[top]
        if sub:
            if sub == generation:
                continue
            what = f"files of version {top!r} that no manifest names (an interrupted save)"
            location = f"{remote.location}/{top}/{sub}"
            _objects(location, what, objects, older_than, found, skipped)
            continue
        orphans = [(path, info) for path, info in objects if path not in flat]
        if orphans:
            what = f"files of version {top!r} that no manifest names (an earlier release's layout)"
            location = f"{remote.location}/{top}/"
            _objects(location, what, orphans, older_than, found, skipped)


def _referenced(remote: RemoteVersions, version: str) -> tuple[str, set[str]] | None:
    """(generation folder name, flat object paths) that the published manifest names.

    A version without a manifest references nothing; None for one whose manifest cannot be
    read: it is left alone entirely (a warning says so).
    """
    manifest = remote.manifest_bytes(version)
    if manifest is None:
        return "", set()
    try:
        record = parse_manifest(manifest, source=f"{remote.location}/{version}/{MANIFEST_FILE}")
    except BundleError as exc:
        warnings.warn(
            StorageWarning(
                f"Left {remote.location}/{version} alone: its manifest does not read ({exc}).",
                path=f"{remote.location}/{version}",
            ),
            stacklevel=4,
        )
        return None
    base = remote.files_base(version, manifest, record)
    generation = GENERATION_PREFIX + generation_of(manifest)
    if base.endswith(generation):
        return generation, set()
    return "", {f"{base}/{relative}" for relative in record.files}


def _objects(
    location: str,
    what: str,
    objects: list[tuple[str, dict[str, Any]]],
    older_than: float,
    found: list[Leftover],
    skipped: list[str],
) -> None:
    newest = max(_modified(info) for _, info in objects)
    age = time.time() - newest
    if age < older_than:
        skipped.append(f"{location}: younger than {_duration(older_than)} (maybe a save running)")
        return
    size = sum(int(info.get("size") or 0) for _, info in objects)
    targets = tuple(sorted(path for path, _ in objects))
    found.append(Leftover(location, what, size, age, kind="objects", targets=targets))


def _modified(info: dict[str, Any]) -> float:
    """When an object was last written, from whatever field its fsspec backend reports."""
    for name in ("LastModified", "last_modified", "mtime", "updated", "modified", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()  # unknown: count it as fresh, never as abandoned


# ---------------------------------------------------------------------------- aliases, cache
def _aliases(root: Root, found: list[Leftover]) -> None:
    for record in root.aliases.superseded():
        what = f"a superseded record of alias {record.alias!r} (the latest keeps its history)"
        key = (record.key,)
        found.append(Leftover(record.where, what, 0, 0.0, kind="alias record", targets=key))


def _cache(older_than: float, found: list[Leftover], skipped: list[str]) -> None:
    base = cache_dir()
    kinds = {
        STAGING_PREFIX: "an interrupted save's local copy (cache)",
        cache.DOWNLOAD_PREFIX: "an interrupted download (cache)",
        cache.EXTRACT_PREFIX: "an interrupted archive extraction (cache)",
        TRASH_PREFIX: "a discarded cache entry",
    }
    parents = [base / cache.SCRATCH_DIR, base / "archives", *base.glob("remote/*")]
    for parent in parents:
        if not parent.is_dir():
            continue
        with quiet(parent) as idle:
            for path in parent.iterdir():
                prefix = next((p for p in kinds if path.name.startswith(p)), None)
                if prefix is not None:
                    _work(path, kinds[prefix], older_than, idle, found, skipped)


# ---------------------------------------------------------------------------- reclaiming
def _apply(root: Root, item: Leftover) -> bool:
    if item.kind == "alias record":
        root.aliases.keys.remove(item.targets[0])
        return True
    if item.kind == "objects":
        assert root.remote is not None
        with contextlib.suppress(FileNotFoundError):
            root.remote.fs.rm(list(item.targets))
        return True
    path = Path(item.location)
    if item.action == "restore":
        target = path.parent / str(store.replaced_version(path.name))
        if target.exists():
            return False
        try:
            os.rename(path, target)
        except OSError:
            return False
        return True
    if in_use(path):
        return False  # a process took it up since the report
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return not path.exists()


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
