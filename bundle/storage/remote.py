"""Versions on object storage (S3, GCS, ``memory://`` ... through fsspec): no rename, no locks.

A version is published by one PUT of its manifest, and that PUT is the only step readers
see::

    <root>/<version>/manifest.json              the published manifest
    <root>/<version>/.gen-<generation>/<file>   the files it lists

The generation is the start of the sha256 of the manifest's bytes, so a reader finds the
files of the very manifest it read, and two manifests that share a generation list the same
bytes. Saving a version:

1. upload every file under a generation of its own (invisible: no manifest names it yet);
2. PUT the manifest: conditional for a new version (``If-None-Match: *``, fsspec's
   ``mode="create"``): of two writers of one version exactly one wins and the other gets
   `VersionExistsError`; unconditional for ``overwrite=True``, which switches every file at
   once;
3. delete the generation the old manifest named (after an overwrite).

A crash before step 2 leaves the old version (or none) published and an orphaned
generation; after it, the new version and the old generation. No claim is left behind:
retrying the same version works. `bundle gc` removes orphaned generations once untouched for
``older_than`` (object stores cannot tell a dead writer from a slow one). Versions published
by earlier releases, with their files next to the manifest, keep loading.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BundleError, StorageError, VersionExistsError
from ..format.layout import GENERATION_PREFIX, MANIFEST_FILE
from ..format.manifest import Manifest, parse_manifest
from .local import version_key

__all__ = ["RemoteVersions", "generation_of"]

_ATTEMPTS = 1000


def generation_of(manifest: bytes) -> str:
    """The generation a manifest's files live under: 16 hex digits of its sha256."""
    return hashlib.sha256(manifest).hexdigest()[:16]


class RemoteVersions:
    """The versions under one fsspec path."""

    def __init__(self, fs: Any, base: str, location: str):
        self.fs = fs
        self.base = base.rstrip("/")
        self.location = location.rstrip("/")

    def fresh(self) -> Any:
        """The filesystem, its cached listings dropped: other processes publish here too.

        fsspec backends (s3fs, gcsfs) cache directory listings with no expiry in a client
        that the whole process shares. A listing cached before another process published
        would hide that version from every later list or load, and make auto-numbering
        retry a taken number until it gives up.
        """
        self.fs.invalidate_cache()
        return self.fs

    def key(self, *parts: str) -> str:
        return "/".join([self.base, *parts]) if self.base else "/".join(parts)

    # ------------------------------------------------------------ reading
    def list_versions(self) -> list[str]:
        """Published versions (those with a manifest), lowest first."""
        manifests = self.fresh().glob(self.key("*", MANIFEST_FILE))
        found = [path.rstrip("/").split("/")[-2] for path in manifests]
        return sorted((v for v in found if not v.startswith(".")), key=version_key)

    def manifest_bytes(self, version: str) -> bytes | None:
        """The published manifest of `version`, or None if it is not published."""
        try:
            return self.fs.cat_file(self.key(version, MANIFEST_FILE))
        except FileNotFoundError:
            return None

    def files_base(self, version: str, manifest: bytes, record: Manifest) -> str:
        """The folder holding the files `manifest` lists: its generation, or (for versions
        published by earlier releases) the version folder itself."""
        generation = self.key(version, GENERATION_PREFIX + generation_of(manifest))
        probe = record.model.get("file") or next(iter(record.files), None)
        if probe is None or self.fs.exists(f"{generation}/{probe}"):
            return generation
        return self.key(version)

    def download(self, version: str, manifest: bytes, record: Manifest, into: Path) -> None:
        """Copy the files `manifest` lists into the folder `into`.

        Raises:
            FileNotFoundError: an object is gone (the version was replaced meanwhile).
        """
        base = self.files_base(version, manifest, record)
        for relative in record.files:
            destination = into / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(f"{base}/{relative}", str(destination))

    # ------------------------------------------------------------ publishing
    def publish(
        self,
        staging: Path,
        version: str | None,
        *,
        finalize: Callable[[Path, str], None],
        overwrite: bool,
    ) -> str:
        """Publish a written staging directory (see the module docstring); return the version.

        Raises:
            VersionExistsError: `version` is published and `overwrite` is False.
        """
        for _attempt in range(_ATTEMPTS):
            chosen = version if version is not None else self._next_version()
            current = self.manifest_bytes(chosen)
            if current is not None and not overwrite:
                if version is None:
                    continue  # published by another writer since we listed
                raise self._exists(chosen)
            finalize(staging, chosen)
            manifest = (staging / MANIFEST_FILE).read_bytes()
            generation = generation_of(manifest)
            self._upload(staging, chosen, generation)
            if current is not None:
                # One PUT switches the version to the new generation, whole.
                self.fs.pipe_file(self.key(chosen, MANIFEST_FILE), manifest)
                self._retire(chosen, current, keep=generation)
                return chosen
            if self._create(self.key(chosen, MANIFEST_FILE), manifest):
                return chosen
            # Another writer published `chosen` first: our generation is an orphan.
            self._drop(chosen, generation)
            if version is not None and not overwrite:
                raise self._exists(chosen)
        raise StorageError(
            f"Could not publish a version under {self.location}: {_ATTEMPTS} other writers "
            "won the race first. Try again."
        )

    def _upload(self, staging: Path, version: str, generation: str) -> None:
        folder = self.key(version, GENERATION_PREFIX + generation)
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            relative = file.relative_to(staging).as_posix()
            if relative != MANIFEST_FILE:
                self.fs.put_file(str(file), f"{folder}/{relative}")

    def _create(self, path: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def _drop(self, version: str, generation: str) -> None:
        """Delete our unpublished generation, unless the winner's manifest names it too."""
        published = self.manifest_bytes(version)
        if published is not None and generation_of(published) == generation:
            return  # the same bytes: the winner's files are ours
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.key(version, GENERATION_PREFIX + generation), recursive=True)

    def _retire(self, version: str, old: bytes, *, keep: str) -> None:
        """Delete the files of the manifest just replaced (never those of `keep`)."""
        if generation_of(old) == keep:
            return
        try:
            record = parse_manifest(old, source=f"{self.location}/{version}/{MANIFEST_FILE}")
        except BundleError:  # a manifest we cannot read: leave its files to `bundle gc`
            return
        base = self.files_base(version, old, record)
        if base.rstrip("/").rsplit("/", 1)[-1].startswith(GENERATION_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(base, recursive=True)
            return
        for relative in record.files:  # an earlier release's layout: files next to the manifest
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{base}/{relative}")

    def _next_version(self) -> str:
        integers = [int(v) for v in self.list_versions() if v.isascii() and v.isdigit()]
        return str(max(integers, default=0) + 1)

    def _exists(self, version: str) -> VersionExistsError:
        return VersionExistsError(
            f"Version {version!r} already exists under {self.location}; published versions "
            "are immutable.\nSave under a new version, or pass overwrite=True to replace it.",
            version=version,
            path=self.key(version),
        )
