"""A verified, private view of a version directory: what was hashed is what is used.

Hashing files and then opening them again by path lets a concurrent writer swap them in
between (``save(..., overwrite=True)`` replaces a version by renaming): a loader would
verify manifest A and then construct from model B. A snapshot closes that window:

1. the version directory is opened once (a directory descriptor), and ``manifest.json`` and
   every other file are opened relative to it, never again by path;
2. every entry is checked with ``lstat`` semantics before it is opened: a symbolic link, a
   FIFO, a device or a socket is refused (``O_NOFOLLOW | O_NONBLOCK``: opening never
   follows a link and never blocks), so a hostile bundle cannot make a load hang;
3. each file is hashed from its open descriptor, and the loader reads the very same files
   through `Snapshot.path`, a private directory whose entries link to those descriptors
   (``/proc/self/fd``; where that does not exist, the hashed bytes are copied there as
   they are read);
4. `Snapshot.close` checks that no file was written to while it was in use (size and
   modification time; change time unless the file was merely unlinked).

Files removed under an open snapshot stay readable until it is closed. If a version is
replaced before its files were opened, the snapshot is retaken from the path: a loader sees
all of one version, or an `IntegrityError` saying it kept changing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, ManifestError, bullet_list
from .layout import MANIFEST_FILE, UNLISTED_FILES

CHUNK_SIZE = 1 << 20
MAX_MANIFEST_BYTES = 64 << 20
ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.05
_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_AT = os.open in os.supports_dir_fd and os.scandir in os.supports_fd
_PROC_FD = Path("/proc/self/fd")

__all__ = [
    "FileTable",
    "Snapshot",
    "describe_mode",
    "open_snapshot",
    "read_regular",
    "scan_directory",
    "verify_directory",
]


def describe_mode(mode: int) -> str:
    """``a FIFO``, ``a symbolic link``, ... for a file mode that is not a regular file."""
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ]
    return next((text for test, text in kinds if test(mode)), "not a regular file")


class _Dir:
    """A directory opened once; its entries are opened relative to it, never by path."""

    def __init__(self, path: Path, fd: int | None):
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> _Dir:
        if not _AT:
            if not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))
            return cls(path, None)
        return cls(path, os.open(path, _DIR_FLAGS))

    def child(self, name: str) -> _Dir:
        if self.fd is None:
            return _Dir(self.path / name, None)
        fd = os.open(name, _DIR_FLAGS | getattr(os, "O_NOFOLLOW", 0), dir_fd=self.fd)
        return _Dir(self.path / name, fd)

    def entries(self) -> Iterator[os.DirEntry]:
        with os.scandir(self.fd if self.fd is not None else self.path) as found:
            yield from found

    def open_file(self, name: str) -> int:
        """A descriptor of the regular file `name`; refuses links and special files."""
        if self.fd is None:
            mode = os.lstat(self.path / name).st_mode
            if not stat.S_ISREG(mode):
                raise _Irregular(describe_mode(mode))
            fd = os.open(self.path / name, _FLAGS)
        else:
            try:
                fd = os.open(name, _FLAGS, dir_fd=self.fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                    raise _Irregular("a symbolic link") from exc
                raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise _Irregular(describe_mode(mode))
        return fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Irregular(OSError):
    """An entry that is not a regular file (its kind as the message)."""


def read_regular(path: Path, *, limit: int = MAX_MANIFEST_BYTES, what: str = "file") -> bytes:
    """The bytes of the regular file at `path`: never follows a link, never blocks.

    Raises:
        FileNotFoundError: nothing at `path`.
        ManifestError: `path` is a link, FIFO, device, socket or directory, or is larger
            than `limit`.
    """
    path = Path(path)
    parent = _Dir.open(path.parent)
    try:
        try:
            fd = parent.open_file(path.name)
        except _Irregular as exc:
            raise ManifestError(
                f"{path} is {exc}, not a regular {what}: refused before opening it.\n"
                "Bundles hold regular files only; restore it from the release."
            ) from exc
        except IsADirectoryError as exc:
            raise ManifestError(f"{path} is a directory, not a regular {what}.") from exc
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                raise ManifestError(
                    f"{path} is {size:,} bytes, more than the {limit:,} a {what} may be."
                )
            with open(fd, "rb", closefd=False) as handle:
                return handle.read(limit + 1)
        finally:
            os.close(fd)
    finally:
        parent.close()


@dataclass
class _Scan:
    """What a directory walk found: regular files and everything else, by relative path."""

    files: list[str] = field(default_factory=list)
    irregular: dict[str, str] = field(default_factory=dict)


def _walk(directory: _Dir, prefix: str, scan: _Scan) -> None:
    for entry in directory.entries():
        relative = f"{prefix}{entry.name}"
        if entry.is_symlink():
            scan.irregular[relative] = "a symbolic link"
        elif entry.is_dir(follow_symlinks=False):
            child = directory.child(entry.name)
            try:
                _walk(child, f"{relative}/", scan)
            finally:
                child.close()
        elif entry.is_file(follow_symlinks=False):
            if relative not in UNLISTED_FILES:
                scan.files.append(relative)
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
            scan.irregular[relative] = describe_mode(mode)


def scan_directory(directory: Path) -> tuple[list[str], dict[str, str]]:
    """(regular files but the manifest and signature, {other entry: its kind}) under
    `directory`, sorted.

    Links are reported, never followed; nothing is opened but directories.
    """
    root = _Dir.open(Path(directory))
    try:
        scan = _Scan()
        _walk(root, "", scan)
    finally:
        root.close()
    return sorted(scan.files), dict(sorted(scan.irregular.items()))


@dataclass
class _Opened:
    fd: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    size: int


def _written(now: os.stat_result, then: _Opened) -> bool:
    """True if a file was written to since `then`. Unlinking it (a version replaced by a
    save) changes its ctime too, but also its link count: only a change of content, size
    or modification time, or of ctime with the same links, counts as a write."""
    if (now.st_mtime_ns, now.st_size) != (then.mtime_ns, then.size):
        return True
    return now.st_ctime_ns != then.ctime_ns and now.st_nlink == then.nlink


class Snapshot:
    """A verified version directory, read through `path` until `close` (a context manager).

    Attributes:
        manifest: the manifest read with the files (a `Manifest`).
        manifest_bytes: the bytes it was parsed from (None when the caller passed it), what
            the bundle digest and a signature are checked against.
        source: the version directory the snapshot was taken of.
        path: a private directory holding exactly the verified files; read parts from it.
    """

    def __init__(
        self,
        manifest: Any,
        source: Path,
        path: Path,
        opened: dict[str, _Opened],
        manifest_bytes: bytes | None = None,
    ):
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.source = source
        self.path = path
        self._opened = opened

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(check=exc_info[0] is None)

    def close(self, *, check: bool = True) -> None:
        """Release the files; with `check`, refuse if any changed while in use.

        Raises:
            IntegrityError: a file was written to after it was hashed.
        """
        changed = []
        try:
            for relative, opened in self._opened.items():
                if _written(os.fstat(opened.fd), opened):
                    changed.append(relative)
        finally:
            for opened in self._opened.values():
                with contextlib.suppress(OSError):
                    os.close(opened.fd)
            self._opened = {}
            shutil.rmtree(self.path, ignore_errors=True)
        if check and changed:
            raise IntegrityError(
                f"{len(changed)} file(s) of {self.manifest.label} were written to while it was "
                f"being loaded:\n{bullet_list(changed)}\nA published version is never edited "
                "in place; something else writes into the store. Load it again.",
                mismatched=changed,
            )


def open_snapshot(
    directory: Path,
    *,
    manifest: Any = None,
    only: Iterable[str] | None = None,
) -> Snapshot:
    """Take a verified snapshot of a version directory (see the module docstring).

    Args:
        directory: the version directory.
        manifest: the `Manifest` to check the files against (default: read it from
            `directory` through the same directory descriptor).
        only: check and expose just these listed files (the whole table otherwise).

    Raises:
        ManifestError: no readable manifest.
        IntegrityError: a file is missing, unlisted, not a regular file or differs from the
            manifest, or the version kept changing while it was read.
    """
    directory = Path(directory)
    for attempt in range(ATTEMPTS):
        try:
            return _take(directory, manifest, only)
        except _Vanished as exc:
            if attempt == ATTEMPTS - 1:
                raise IntegrityError(
                    f"{directory} changed while it was being read ({exc}), {ATTEMPTS} times in "
                    "a row: another process is replacing this version.\nLoad it again once the "
                    "save that replaces it is done.",
                    missing=[str(exc)],
                ) from None
            time.sleep(RETRY_PAUSE_SECONDS * (attempt + 1))
    raise AssertionError("unreachable")


class _Vanished(Exception):
    """The directory or a file went away while reading: a concurrent replace."""


def _take(directory: Path, manifest: Any, only: Iterable[str] | None) -> Snapshot:
    from .manifest import parse_manifest

    try:
        root = _Dir.open(directory)
    except FileNotFoundError as exc:
        if manifest is not None:
            raise _Vanished(str(directory)) from exc
        raise ManifestError(
            f"{directory} does not exist: expected a bundle version directory."
        ) from exc
    except NotADirectoryError as exc:
        raise ManifestError(f"{directory} is not a directory: expected a bundle version.") from exc
    opened: dict[str, _Opened] = {}
    private: Path | None = None
    raw = None
    try:
        if manifest is None:
            raw = _read_manifest(root)
            manifest = parse_manifest(raw, source=str(directory / MANIFEST_FILE))
        recorded = manifest.files
        wanted = sorted(recorded) if only is None else sorted(only)
        scan = _Scan()
        try:
            _walk(root, "", scan)
        except FileNotFoundError as exc:
            raise _Vanished(str(exc.filename or directory)) from exc
        problems = _Problems(manifest.label, len(recorded))
        if only is None:
            for name in sorted(set(recorded) - set(scan.files) - set(scan.irregular)):
                problems.missing.append(name)
            if problems.missing and _replaced(directory, root):
                raise _Vanished(problems.missing[0])
            problems.unexpected += sorted(set(scan.files) - set(recorded))
        for name, kind in scan.irregular.items():
            if only is None or name in wanted:
                problems.irregular.append((name, kind))
        private = Path(tempfile.mkdtemp(prefix="keras-bundle-snapshot-"))
        for name in wanted:
            if name not in scan.files:
                if only is not None and name not in scan.irregular:
                    problems.missing.append(name)
                continue
            try:
                verified = _verify_one(root, name, recorded[name], problems, private)
            except FileNotFoundError as exc:
                raise _Vanished(name) from exc
            if verified is not None:
                opened[name] = verified
        problems.raise_if_any()
        return Snapshot(manifest, directory, private, opened, raw)
    except BaseException:
        for item in opened.values():
            os.close(item.fd)
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
        raise
    finally:
        root.close()


def _read_manifest(root: _Dir) -> bytes:
    path = root.path / MANIFEST_FILE
    try:
        fd = root.open_file(MANIFEST_FILE)
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{path} does not exist: {root.path} is not a bundle version directory."
        ) from exc
    except (_Irregular, IsADirectoryError) as exc:
        kind = "a directory" if isinstance(exc, IsADirectoryError) else str(exc)
        raise ManifestError(
            f"{path} is {kind}, not a regular file: refused before opening it.\n"
            "Bundles hold regular files only; restore it from the release."
        ) from exc
    try:
        size = os.fstat(fd).st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{path} is {size:,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,}."
            )
        with open(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_MANIFEST_BYTES + 1)
    finally:
        os.close(fd)


def _replaced(directory: Path, root: _Dir) -> bool:
    """True if `directory` no longer names the directory `root` has open (a rename)."""
    if root.fd is None:
        return False
    try:
        now = os.stat(directory)
    except OSError:
        return True
    opened = os.fstat(root.fd)
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)


def _verify_one(
    root: _Dir, name: str, expected: Mapping[str, Any], problems: _Problems, private: Path
) -> _Opened | None:
    """Open, hash and expose one file; record a mismatch in `problems`."""
    *folders, base = name.split("/")
    directory = root
    chain = []
    try:
        for folder in folders:
            directory = directory.child(folder)
            chain.append(directory)
        try:
            fd = directory.open_file(base)
        except _Irregular as exc:  # replaced by a link or a FIFO since the walk
            problems.irregular.append((name, str(exc)))
            return None
    finally:
        for item in chain:
            item.close()
    try:
        info = os.fstat(fd)
        target = private / name
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        link = _PROC_FD / str(fd)
        copy = None if _PROC_FD.is_dir() else open(target, "wb")  # noqa: SIM115
        try:
            with open(fd, "rb", closefd=False) as handle:
                handle.seek(0)
                while chunk := handle.read(CHUNK_SIZE):
                    digest.update(chunk)
                    if copy is not None:
                        copy.write(chunk)
        finally:
            if copy is not None:
                copy.close()
        if copy is None:
            os.symlink(link, target)
        size = info.st_size
        if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
            detail = (
                f"{name}: {size:,} bytes on disk, {expected['size']:,} recorded; "
                f"sha256 {digest.hexdigest()[:8]}... vs {expected['sha256'][:8]}..."
            )
            problems.mismatched.append((name, detail, size < expected["size"]))
        return _Opened(fd, info.st_mtime_ns, info.st_ctime_ns, info.st_nlink, size)
    except BaseException:
        os.close(fd)
        raise


@dataclass
class _Problems:
    label: str
    total: int
    mismatched: list[tuple[str, str, bool]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    irregular: list[tuple[str, str]] = field(default_factory=list)

    def raise_if_any(self) -> None:
        if not (self.mismatched or self.missing or self.unexpected or self.irregular):
            return
        parts = []
        if self.mismatched:
            parts.append(
                f"{len(self.mismatched)} of {self.total} files in {self.label} do not match the "
                "manifest:\n" + bullet_list(detail for _, detail, _ in self.mismatched)
            )
            if all(shorter for _, _, shorter in self.mismatched):
                parts.append(
                    "The files are shorter than recorded: the copy was probably interrupted "
                    "(or they were replaced)."
                )
        if self.irregular:
            parts.append(
                f"{len(self.irregular)} entr(ies) in {self.label} are not regular files, refused "
                "before opening them:\n"
                + bullet_list(f"{name}: {kind}" for name, kind in self.irregular)
            )
        if self.missing:
            parts.append(
                f"{len(self.missing)} file(s) listed in the manifest of {self.label} are "
                "missing:\n" + bullet_list(self.missing)
            )
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} file(s) in {self.label} are not listed in its "
                "manifest:\n" + bullet_list(self.unexpected)
            )
        parts.append(
            "The bundle was modified after it was saved. Restore it from the original release; "
            "a bundle is never edited in place."
        )
        irregular = [name for name, _ in self.irregular]
        raise IntegrityError(
            "\n".join(parts),
            mismatched=sorted({*(name for name, _, _ in self.mismatched), *irregular}),
            missing=self.missing,
            unexpected=self.unexpected,
        )


def verify_directory(
    directory: Path, recorded: Mapping[str, Mapping[str, Any]], *, label: str
) -> None:
    """Check that `directory` holds exactly the recorded regular files, byte for byte.

    Raises:
        IntegrityError: naming each mismatched, missing, unlisted or irregular file.
    """
    open_snapshot(Path(directory), manifest=FileTable(dict(recorded), label)).close(check=False)


@dataclass(frozen=True)
class FileTable:
    """What a snapshot checks files against when there is no whole `Manifest`."""

    files: dict[str, Mapping[str, Any]]
    label: str
