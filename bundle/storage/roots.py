"""A root of versions, on the local disk or behind an fsspec URL: list, resolve, publish, alias.

- a local directory (a version directory, or a root of versions), ``file://`` included;
- an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...): versions are listed from
  ``<root>/<version>/manifest.json`` objects, published by uploading every file and then
  the manifest last, and downloaded into a local cache to load;
- ``<root>@<alias>``: an alias recorded in ``<root>/.aliases/<alias>.json``.

Object stores have no rename, so a remote version is claimed first with a conditional
create of ``<root>/.claims/<version>`` (an atomic "create if absent" on S3 and fsspec's
other backends): of two writers of the same version, exactly one gets the claim.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import BundleNotFoundError, StorageError, VersionExistsError, bullet_list
from ..format.integrity import verify_files
from ..format.layout import ALIASES_DIR, CLAIMS_DIR, MANIFEST_FILE
from ..format.manifest import parse_manifest
from ..format.snapshot import read_regular
from . import local as store
from .paths import cache_dir, is_url, local_path

__all__ = ["Root", "VersionInfo", "open_root"]


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

    @property
    def is_remote(self) -> bool:
        return self.fs is not None

    @property
    def local(self) -> Path:
        return local_path(self.location)

    def _fresh(self) -> Any:
        """The filesystem, its cached listings dropped: other processes publish here too.

        fsspec backends (s3fs, gcsfs) cache directory listings with no expiry in a client
        that the whole process shares. A listing cached before another process published
        would hide that version from every later list or load, and make auto-numbering
        retry a taken number until it gives up.
        """
        self.fs.invalidate_cache()
        return self.fs

    def _join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts]) if self.path else "/".join(parts)

    # ------------------------------------------------------------ listing and resolving
    def list_versions(self) -> list[str]:
        """Published versions (those with a manifest), lowest first."""
        if not self.is_remote:
            return store.list_versions(self.local)
        pattern = self._join("*", MANIFEST_FILE)
        found = [p.rstrip("/").split("/")[-2] for p in self._fresh().glob(pattern)]
        return sorted((v for v in found if not v.startswith(".")), key=store.version_key)

    def is_version(self) -> bool:
        """True if the location itself is one version directory."""
        if not self.is_remote:
            return store.is_version_dir(self.local)
        return self._fresh().exists(self._join(MANIFEST_FILE))

    def resolve(self, version: str | None = None) -> str:
        """The version a request means: an explicit version, an alias, or the highest.

        Raises:
            BundleNotFoundError: nothing published, or no such version or alias.
        """
        available = self.list_versions()
        if version is not None and version in available:
            return version
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
            aliases = self.list_aliases()
            raise BundleNotFoundError(
                f"No version or alias {version!r} under {self.location}."
                + (f"\nVersions there:\n{bullet_list(reversed(available))}" if available else "")
                + (f"\nAliases there:\n{bullet_list(sorted(aliases))}" if aliases else ""),
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
    def read_manifest_text(self, version: str) -> bytes:
        if not self.is_remote:
            # Never follows a link nor blocks on a FIFO planted as the manifest.
            return read_regular(self.local / version / MANIFEST_FILE, what="manifest")
        return self.fs.cat_file(self._join(version, MANIFEST_FILE))

    def local_copy(self, version: str) -> Path:
        """A local directory holding the version: itself, or a verified-later cache copy."""
        if not self.is_remote:
            return self.local / version
        manifest = self.read_manifest_text(version)
        # Validated before anything is downloaded: the file names come from the store, and
        # the schema refuses the absolute and ".." names that would land outside the cache.
        record = parse_manifest(manifest, source=f"{self.location}/{version}/{MANIFEST_FILE}")
        key = hashlib.sha256(f"{self.location}\0{version}".encode() + manifest).hexdigest()[:32]
        target = cache_dir() / "remote" / key / version
        if (target / MANIFEST_FILE).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        download = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            for relative in record.files:
                destination = download / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._join(version, relative), str(destination))
            # Verified before it is cached: a bad download kept in the cache would fail every
            # later load of this version, even once the object is restored.
            verify_files(download, record.files, label=record.label)
            (download / MANIFEST_FILE).write_bytes(manifest)  # last, as on publish
            os.rename(download, target)
        except FileExistsError:
            pass  # another process cached it first
        except OSError as exc:
            if not (target / MANIFEST_FILE).is_file():
                raise StorageError(f"Could not download {self.location}/{version}: {exc}") from exc
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return target

    # ------------------------------------------------------------ publishing
    def publish(
        self,
        staging: Path,
        version: str | None,
        *,
        finalize: Callable[[Path, str], None],
        overwrite: bool,
    ) -> str:
        """Publish a written staging directory; return the version's location."""
        if not self.is_remote:
            return str(
                store.publish(staging, self.local, version, finalize=finalize, overwrite=overwrite)
            )
        chosen = self._claim(version, overwrite=overwrite)
        finalize(staging, chosen)
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            relative = file.relative_to(staging).as_posix()
            if relative != MANIFEST_FILE:
                self.fs.put_file(str(file), self._join(chosen, relative))
        self.fs.pipe_file(self._join(chosen, MANIFEST_FILE), (staging / MANIFEST_FILE).read_bytes())
        return f"{self.location}/{chosen}"

    def _claim(self, version: str | None, *, overwrite: bool) -> str:
        """Atomically reserve a version name on the object store."""
        if version is not None:
            exists = self._fresh().exists(self._join(version, MANIFEST_FILE))
            if exists and not overwrite:
                raise self._exists(version)
            if overwrite:
                # Object stores cannot swap a version in one step: hide the old one (its
                # manifest first), then publish the new one. A failed upload leaves none.
                if exists:
                    self.fs.rm_file(self._join(version, MANIFEST_FILE))
                    self.fs.rm(self._join(version), recursive=True)
                self._release(version)  # also frees a claim left by a crashed writer
            if not self._try_claim(version):
                raise self._exists(version)
            return version
        for _attempt in range(1000):
            candidate = self._next_version()
            if self._try_claim(candidate):
                return candidate
        raise StorageError(f"Could not claim a free version number under {self.location}.")

    def _try_claim(self, version: str) -> bool:
        stamp = json.dumps({"claimed": _now(), "by": uuid.uuid4().hex}).encode()
        try:
            self.fs.pipe_file(self._join(CLAIMS_DIR, version), stamp, mode="create")
        except FileExistsError:
            return False
        return True

    def _release(self, version: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._join(CLAIMS_DIR, version))

    def _next_version(self) -> str:
        names = set(self.list_versions())
        with contextlib.suppress(FileNotFoundError):
            names |= {
                p.rstrip("/").split("/")[-1]
                for p in self.fs.ls(self._join(CLAIMS_DIR), detail=False)
            }
        integers = [int(name) for name in names if name.isascii() and name.isdigit()]
        return str(max(integers, default=0) + 1)

    def _exists(self, version: str) -> VersionExistsError:
        return VersionExistsError(
            f"Version {version!r} already exists under {self.location}; published versions "
            "are immutable.\nSave under a new version, or pass overwrite=True to replace it.",
            version=version,
            path=self._join(version),
        )

    # ------------------------------------------------------------ aliases
    def _alias_path(self, alias: str) -> str:
        store.check_version_name(alias)
        return self._join(ALIASES_DIR, f"{alias}.json")

    def read_alias(self, alias: str) -> dict[str, Any] | None:
        """``{"alias", "version", "history": [...]}`` or None if there is no such alias."""
        try:
            path = self._alias_path(alias)
        except ValueError:
            return None
        try:
            data = (
                self.fs.cat_file(path)
                if self.is_remote
                else (self.local / ALIASES_DIR / f"{alias}.json").read_bytes()
            )
        except FileNotFoundError:
            return None
        return json.loads(data)

    def list_aliases(self) -> dict[str, str]:
        """``{alias: version}`` for every alias under the root."""
        if self.is_remote:
            try:
                names = self._fresh().ls(self._join(ALIASES_DIR), detail=False)
            except FileNotFoundError:
                return {}
        else:
            folder = self.local / ALIASES_DIR
            names = [str(p) for p in folder.glob("*.json")] if folder.is_dir() else []
        aliases = {}
        for name in names:
            alias = name.rstrip("/").split("/")[-1].removesuffix(".json")
            record = self.read_alias(alias)
            if record:
                aliases[alias] = record["version"]
        return aliases

    def write_alias(self, alias: str, version: str) -> dict[str, Any]:
        """Point `alias` at `version`, keeping the alias's history. Atomic replace."""
        self._alias_path(alias)  # refuse a name read_alias would not read, local or remote
        if version not in self.list_versions():
            available = self.list_versions()
            raise BundleNotFoundError(
                f"Cannot tag {alias!r}: no version {version!r} under {self.location}."
                + (f" Versions there:\n{bullet_list(reversed(available))}" if available else ""),
                location=self.location,
                available=available,
            )
        previous = self.read_alias(alias) or {"alias": alias, "history": []}
        record = {
            "alias": alias,
            "version": version,
            "updated": _now(),
            "history": [*previous.get("history", []), {"version": version, "time": _now()}],
        }
        data = (json.dumps(record, indent=2) + "\n").encode()
        if self.is_remote:
            self.fs.pipe_file(self._alias_path(alias), data)  # one PUT: atomic
        else:
            folder = self.local / ALIASES_DIR
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{alias}.{uuid.uuid4().hex}.tmp"
            tmp.write_bytes(data)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, folder / f"{alias}.json")
        return record


def open_root(location: str | Path, **storage_options: Any) -> Root:
    """A `Root` for a local path, ``file://`` path or fsspec URL."""
    if not is_url(location):
        return Root(local_path(location))
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(location), **storage_options)
    return Root(str(location).rstrip("/"), fs=fs, path=path.rstrip("/"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
