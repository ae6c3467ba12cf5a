"""A root of versions, on the local disk or behind an fsspec URL: list, resolve, publish, alias.

- a local directory (a version directory, or a root of versions), ``file://`` included:
  see `local` for how versions are published and replaced;
- an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...): see `remote`; versions are
  downloaded into the local cache to load, verified before use;
- ``<root>@<alias>``: an alias recorded under ``<root>/.aliases/`` (see `aliases`).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleNotFoundError, StorageError, StorageWarning, bullet_list
from ..format.integrity import verify_files
from ..format.layout import MANIFEST_FILE
from ..format.manifest import parse_manifest
from ..format.snapshot import read_regular
from . import cache
from . import local as store
from .aliases import AliasStore, LocalKeys, RemoteKeys
from .durable import disk_full
from .paths import CACHE_ENV, is_url, local_path
from .remote import RemoteVersions

__all__ = ["Root", "VersionInfo", "open_root"]

_DOWNLOAD_ATTEMPTS = 3


@dataclass(frozen=True)
class VersionInfo:
    """One published version, as `list_versions` reports it (`digest`: the bundle digest)."""

    version: str
    created: str
    size: int
    aliases: tuple[str, ...]
    location: str
    digest: str = ""


class Root:
    """A root of versions, on the local disk or behind an fsspec URL."""

    def __init__(self, location: str | Path, fs: Any = None, path: str | None = None):
        self.location = str(location)
        self.fs = fs
        self.path = path
        self.remote = RemoteVersions(fs, path or "", self.location) if fs is not None else None
        if fs is not None:
            self.aliases = AliasStore(RemoteKeys(fs, path or "", self.location), self.location)
        else:
            self.aliases = AliasStore(LocalKeys(self.local), self.location)

    @property
    def is_remote(self) -> bool:
        return self.fs is not None

    @property
    def local(self) -> Path:
        return local_path(self.location)

    # ------------------------------------------------------------ listing and resolving
    def list_versions(self) -> list[str]:
        """Published versions (those with a manifest), lowest first."""
        if self.remote is None:
            return store.list_versions(self.local)
        return self.remote.list_versions()

    def is_version(self) -> bool:
        """True if the location itself is one version directory."""
        if self.remote is None:
            try:
                return store.is_version_dir(self.local)
            except OSError as exc:
                raise StorageError(
                    f"Cannot read {self.local}: {exc.strerror or exc}.\n"
                    "Fix its permissions (it must be readable by this user), or ask its owner to."
                ) from exc
        return self.remote.fresh().exists(self.remote.key(MANIFEST_FILE))

    def has_version(self, version: str) -> bool:
        """True if `version` is published here (a clear error if it cannot be read)."""
        if self.remote is None:
            return store.version_path(self.local, version) is not None
        return self.remote.fresh().exists(self.remote.key(version, MANIFEST_FILE))

    def resolve(self, version: str | None = None) -> str:
        """The version a request means: an explicit version, an alias, or the highest.

        Raises:
            BundleNotFoundError: nothing published, or no such version or alias.
            StorageError: the version cannot be read, or the alias record is malformed.
        """
        if version is not None and self.has_version(version):
            return version
        available = self.list_versions()
        if version is not None:
            alias = self.read_alias(version)
            if alias is not None:
                if alias["version"] not in available:
                    raise BundleNotFoundError(
                        f"Alias {version!r} under {self.location} points at version "
                        f"{alias['version']!r}, which is not published there.",
                        location=self.location,
                        available=available,
                    )
                return alias["version"]
            aliases = self.aliases.names()
            raise BundleNotFoundError(
                f"No version or alias {version!r} under {self.location}."
                + (f"\nVersions there:\n{bullet_list(reversed(available))}" if available else "")
                + (f"\nAliases there:\n{bullet_list(aliases)}" if aliases else ""),
                location=self.location,
                available=available,
            )
        if not available and not self.is_remote and not self.local.exists():
            raise BundleNotFoundError(
                f"{self.location} does not exist: expected a bundle version directory, a root "
                "of versions, an archive (.tar.gz, .zip) or a URL.",
                location=self.location,
            )
        if not available:
            raise BundleNotFoundError(
                f"{self.location} holds no published bundle version: expected a version "
                f"directory (with {MANIFEST_FILE}), a root of them, or an archive.",
                location=self.location,
            )
        return available[-1]

    # ------------------------------------------------------------ reading
    def _local_version(self, version: str) -> Path:
        path = store.version_path(self.local, version)
        if path is None:
            raise BundleNotFoundError(
                f"No version {version!r} under {self.location}.", location=self.location
            )
        return path

    def read_manifest_text(self, version: str) -> bytes:
        if self.remote is None:
            # Never follows a link nor blocks on a FIFO planted as the manifest.
            manifest = self._local_version(version) / MANIFEST_FILE
            return read_regular(manifest, what="manifest")
        manifest = self.remote.manifest_bytes(version)
        if manifest is None:
            raise BundleNotFoundError(
                f"No version {version!r} under {self.location}.", location=self.location
            )
        return manifest

    def local_copy(self, version: str) -> Path:
        """A local directory holding the version: itself, or a verified cache copy."""
        if self.remote is None:
            return self._local_version(version)
        for _attempt in range(_DOWNLOAD_ATTEMPTS):
            manifest = self.read_manifest_text(version)
            # Validated before anything is downloaded: the file names come from the store, and
            # the schema refuses the absolute and ".." names that would land outside the cache.
            record = parse_manifest(manifest, source=f"{self.location}/{version}/{MANIFEST_FILE}")
            key = hashlib.sha256(f"{self.location}\0{version}".encode() + manifest).hexdigest()
            target = cache.entry("remote", key[:32], version)
            if cache.usable(target):
                return target
            try:
                with cache.filling(target, cache.DOWNLOAD_PREFIX) as work:
                    self.remote.download(version, manifest, record, work)
                    # Verified before it is cached: a bad download kept in the cache would
                    # fail every later load of this version, even once the object is restored.
                    verify_files(work, record.files, label=record.label)
                    (work / MANIFEST_FILE).write_bytes(manifest)  # last, as on publish
                    cache.install(work, target)
                return target
            except FileNotFoundError as exc:
                if self.remote.manifest_bytes(version) != manifest:
                    continue  # replaced while we downloaded: fetch the new one
                raise StorageError(
                    f"Could not download {self.location}/{version}: {exc}.\n"
                    "An object its manifest lists is missing from the store."
                ) from exc
            except OSError as exc:
                raise StorageError(f"Could not download {self.location}/{version}: {exc}") from exc
        raise StorageError(
            f"Could not download {self.location}/{version}: it was replaced "
            f"{_DOWNLOAD_ATTEMPTS} times while downloading. Try again."
        )

    # ------------------------------------------------------------ publishing
    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A locked local folder to write a version into before `publish`.

        Raises:
            StorageError: the disk filled up while the block wrote (nothing was published).
        """
        parent = self.local if self.remote is None else cache.scratch()
        try:
            with store.staging(parent) as path:
                try:
                    yield path
                except BaseException as exc:
                    full = disk_full(exc)
                    if full is None:
                        raise
                    raise self._disk_full(full, parent, _tree_size(path)) from exc
        except OSError as exc:  # the staging folder itself could not be made
            full = disk_full(exc)
            if full is None:
                raise
            raise self._disk_full(full, parent, 0) from exc

    def _disk_full(self, exc: OSError, parent: Path, written: int) -> StorageError:
        try:
            free = f"{shutil.disk_usage(parent).free:,} bytes free"
        except OSError:
            free = "free space unknown"
        where = f" ({exc.filename})" if exc.filename else ""
        needed = ""
        if written:
            needed = f" The save needed more than the {written:,} bytes it had written."
        if self.remote is None:
            remedy = "Free space on that disk, or save to a root on another disk."
        else:
            remedy = (
                "Saves to object storage write a local copy first: free space there, or "
                f"point ${CACHE_ENV} at a larger disk."
            )
        return StorageError(
            f"The disk holding {parent} is full ({free}): {exc.strerror or exc}{where}."
            f"{needed}\n"
            f"Nothing was published and the partial copy was removed. {remedy}"
        )

    def publish(
        self,
        staging: Path,
        version: str | None,
        *,
        finalize: Callable[[Path, str], None],
        overwrite: bool,
    ) -> str:
        """Publish a written staging directory; return the version's location."""
        if self.remote is None:
            return str(
                store.publish(staging, self.local, version, finalize=finalize, overwrite=overwrite)
            )
        chosen = self.remote.publish(staging, version, finalize=finalize, overwrite=overwrite)
        return f"{self.location}/{chosen}"

    # ------------------------------------------------------------ aliases
    def read_alias(self, alias: str) -> dict[str, Any] | None:
        """``{"alias", "version", "history": [...]}`` or None if there is no such alias.

        Raises:
            StorageError: the alias's latest record is malformed (named in the message).
        """
        try:
            store.check_version_name(alias)
        except ValueError:
            return None
        return self.aliases.read(alias)

    def list_aliases(self) -> dict[str, str]:
        """``{alias: version}`` for every alias under the root; malformed ones are skipped
        with a `StorageWarning`."""
        found = {}
        for alias in self.aliases.names():
            try:
                record = self.read_alias(alias)
            except StorageError as exc:
                warnings.warn(StorageWarning(str(exc), path=alias), stacklevel=2)
                continue
            if record:
                found[alias] = record["version"]
        return found

    def write_alias(self, alias: str, version: str) -> dict[str, Any]:
        """Point `alias` at `version`, keeping the alias's history (compare-and-swap)."""
        store.check_version_name(alias)
        if not self.has_version(version):
            available = self.list_versions()
            raise BundleNotFoundError(
                f"Cannot tag {alias!r}: no version {version!r} under {self.location}."
                + (f" Versions there:\n{bullet_list(reversed(available))}" if available else ""),
                location=self.location,
                available=available,
            )
        return self.aliases.write(alias, version)


def open_root(location: str | Path, **storage_options: Any) -> Root:
    """A `Root` for a local path, ``file://`` path or fsspec URL."""
    if not is_url(location):
        return Root(local_path(location))
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(location), **storage_options)
    return Root(str(location).rstrip("/"), fs=fs, path=path.rstrip("/"))


def _tree_size(folder: Path) -> int:
    """Bytes in the files under `folder` (what a failed write had put there)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total
