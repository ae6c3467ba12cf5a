"""The local cache: remote versions and extracted archives, verified whenever they are used.

``$KERAS_BUNDLE_CACHE`` (default ``~/.cache/keras-bundle``) holds::

    remote/<key>/<version>/     a downloaded version (key: location, version and manifest)
    archives/<sha256>/<name>/   an extracted archive (key: the archive's bytes)
    scratch/.staging-*          the local copy of a version being saved to object storage

An entry is filled in a locked work folder and renamed into place only once verified
against its manifest, and it is verified again each time it is used: an entry damaged on
disk is discarded and fetched again, so a bad copy never blames a good source for ever.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BundleError
from ..format.integrity import verify_files
from ..format.layout import MANIFEST_FILE, TRASH_PREFIX
from ..format.manifest import read_manifest
from .durable import fsync_dir, work_folder
from .paths import cache_dir

__all__ = ["DOWNLOAD_PREFIX", "EXTRACT_PREFIX", "WORK_PREFIXES", "entry", "filling", "usable"]

DOWNLOAD_PREFIX = ".download-"
EXTRACT_PREFIX = ".extract-"
SCRATCH_DIR = "scratch"
WORK_PREFIXES = (DOWNLOAD_PREFIX, EXTRACT_PREFIX)


def entry(*parts: str) -> Path:
    """A path in the cache: ``entry("remote", key, version)``."""
    return cache_dir().joinpath(*parts)


def scratch() -> Path:
    """Where saves to object storage write their local copy (work folders, locked)."""
    path = cache_dir() / SCRATCH_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def usable(folder: Path) -> bool:
    """True if `folder` holds a version whose files all match its manifest.

    A damaged entry (a file changed, missing or added since it was cached) is moved out of
    the way and removed, so that the caller fetches it again.
    """
    if not (folder / MANIFEST_FILE).is_file():
        return False
    try:
        manifest = read_manifest(folder)
        verify_files(folder, manifest.files, label=manifest.label)
    except (BundleError, OSError):
        discard(folder)
        return False
    return True


def discard(folder: Path) -> None:
    """Remove a cache entry: renamed aside first, so no reader sees it half-deleted."""
    trash = folder.parent / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def filling(target: Path, prefix: str) -> Iterator[Path]:
    """A locked work folder next to `target`, to fill and then `install` as `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with work_folder(target.parent, prefix) as work:
        yield work


def install(work: Path, target: Path) -> None:
    """Rename a filled, verified work folder to `target`; keep another process's if first."""
    try:
        os.rename(work, target)
    except OSError:
        if not target.is_dir():
            raise
        return
    with contextlib.suppress(OSError):
        fsync_dir(target.parent)
