"""Bundle archives: reproducible to write, safe to extract.

An archived bundle is a model release, so both directions are strict:

- ``write_archive`` is reproducible: the same files always give the same bytes, whatever
  their mtimes, permissions or creation order, so a release can be rebuilt and compared.
- ``extract_archive`` treats every archive as untrusted: it reads all headers and refuses
  the archive before writing a byte if any member could land outside the destination, is
  not a regular file or folder, or if the archive is over its byte or member bounds.

Every member lives under one top-level folder, the archive's root name::

    churn-1.2.0/
    churn-1.2.0/manifest.json
    churn-1.2.0/model.keras
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from ..errors import (
    IntegrityError,
    StorageError,
    UnsafeArchiveError,
    UnsupportedFormatError,
    UsageError,
    bullet_list,
)
from ..format.layout import ARCHIVE_FORMATS, ARCHIVE_SUFFIXES
from .durable import atomic_file

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "FORMATS",
    "archive_root_name",
    "extract_archive",
    "is_archive_name",
    "write_archive",
]

FORMATS = ("tar.gz", "zip")

DEFAULT_MAX_BYTES = 8 * 2**30
"""Default bound on the bytes one extraction writes: 8 GiB.

Above the largest bundle a serving replica can hold in memory (two billion float32
parameters are 8 GB), and below the free disk of a typical container or CI runner, so a
decompression bomb is stopped before it fills the disk. Pass ``max_bytes`` to go higher.
"""

DEFAULT_MAX_MEMBERS = 10_000
"""Default bound on the members of one archive.

A bundle holds tens of files; 10,000 leaves room for, say, a vocabulary split into files,
and stops an archive of a million empty files from exhausting the disk's inodes.
"""

_PathLike = str | os.PathLike[str]

_MAGIC = {b"\x1f\x8b": "tar.gz", b"PK\x03\x04": "zip", b"PK\x05\x06": "zip"}
_TAR_MTIME = 946_684_800  # 2000-01-01T00:00:00Z: some tools read an mtime of 0 as unset.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_ZIP_UNIX = 3  # ZipInfo.create_system: external_attr holds Unix modes, on every platform
_ZIP_DOS_DIR = 0x10
# zlib's default level, which zipfile also uses for a ZipInfo opened for writing.
_COMPRESSLEVEL = 6
_CHUNK = 2**20  # copy in 1 MiB chunks: model files can exceed a serving pod's memory
_MAX_HEADER_READ = 16 * 2**20
_MAX_PADDING = 2**20  # tar pads to its record size (10 KiB for tarfile); far more is data
_DRIVE = re.compile(r"[A-Za-z]:")
_SPECIAL_MODES = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_TAR_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO (named pipe)",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_TAR_LINKS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link"}
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What tarfile, zipfile, gzip and zlib raise on bytes that are not a well-formed archive.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError)

_TAMPERED = (
    "write_archive() never makes such an archive: it was tampered with, or is not a bundle "
    "archive. Do not use it; get it again from its source."
)
_SPECIAL_WHY = (
    "and a bundle archive holds only regular files and folders: a link can point outside "
    "the destination, a device or FIFO reaches past the file system"
)


@dataclass(frozen=True)
class _Entry:
    """One archive member, or one file or folder about to become one."""

    name: str  # as stored, "/"-separated
    kind: str  # "file", "dir", or what else it is, e.g. "a symbolic link to '/etc'"
    size: int  # declared bytes; 0 unless a file
    ref: tarfile.TarInfo | zipfile.ZipInfo | Path  # what it is read from

    @property
    def parts(self) -> tuple[str, ...]:
        return _parts(self.name)


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member name; "" and "." (as in ``./root/a``) mean nothing."""
    return tuple(part for part in name.split("/") if part not in ("", "."))


class _Problem(NamedTuple):
    member: str | None  # None: the archive as a whole
    reason: str  # what is wrong, e.g. "is an absolute path"
    why: str  # why that is refused
    details: str = ""  # lines shown after the sentence


class _Reader(Protocol):
    fmt: str

    def entries(self) -> Iterator[_Entry]: ...
    def open(self, entry: _Entry) -> BinaryIO: ...
    def close(self) -> None: ...


def is_archive_name(name: str) -> bool:
    """True if `name` ends with one of ``ARCHIVE_SUFFIXES`` (case-insensitive)."""
    return _suffix_format(os.fspath(name)) is not None


def write_archive(
    src_dir: _PathLike, dest: _PathLike | BinaryIO, *, root_name: str, fmt: str | None = None
) -> None:
    """Archive a bundle directory reproducibly, under one top-level folder `root_name`.

    The same files always give byte-identical archives: members sorted by path, fixed mtime,
    owner 0 with no user or group name, modes 0o644 (files) and 0o755 (folders), a gzip
    header without time or file name, and a fixed compression level; the bytes depend only
    on the files and on the Python and zlib versions. A path `dest` is
    written atomically: to a temp file in the same folder, fsynced, then renamed, so the
    final name never holds a partial archive.

    Args:
        src_dir: the bundle directory to archive.
        dest: the archive path, or a writable binary stream (written as is, not closed).
        root_name: the archive's top-level folder, a single name such as ``"churn-1.2.0"``.
        fmt: ``"tar.gz"`` or ``"zip"``; taken from the suffix of a path `dest` when None.

    Raises:
        UnsafeArchiveError: `src_dir` holds a link, a special file, or a name that would
            not extract the same everywhere.
        UnsupportedFormatError: the format is unknown, or cannot be told from `dest`.
        BundleError: `src_dir` is not a directory, or `root_name` is not a single name.

    Example:
        >>> write_archive(root / "1.2.0", Path("churn-1.2.0.tar.gz"), root_name="churn-1.2.0")
    """
    src_dir = Path(src_dir)
    _check_root_name(root_name)
    fmt = _write_format(dest, fmt)
    entries = _collect(src_dir)
    writer = _WRITERS[fmt]
    if isinstance(dest, (str, os.PathLike)):
        with atomic_file(Path(dest)) as out:
            writer(out, root_name, entries)
    else:
        writer(dest, root_name, entries)


def extract_archive(
    archive: _PathLike | BinaryIO,
    dest: _PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    fmt: str | None = None,
) -> Path:
    """Extract a bundle archive into `dest`, refusing anything unsafe before writing.

    All headers are read and checked first. Members are then written into a hidden staging
    folder in `dest`, each stopped at the size its header declares (so the bytes actually
    written never exceed `max_bytes`), and the folder is renamed into place at the end. On
    any error the partial output is removed. Modes, owners and times in the archive are
    not applied. A tar.gz is decompressed twice: once to check, once to extract.

    Args:
        archive: the archive path, or a readable binary stream (for example from fsspec);
            a stream that cannot seek is first copied to a temporary file.
        dest: the folder to extract into; created if missing.
        max_bytes: most bytes the files may hold in total.
        max_members: most members (files and folders) the archive may have.
        fmt: ``"tar.gz"`` or ``"zip"``, checked against the content; detected when None.

    Returns:
        The extracted top-level folder, ``dest / <root name>``.

    Raises:
        UnsafeArchiveError: a member is absolute, has a drive letter or a ``..``, is a link
            or a special file, or is not under the single top-level folder; or the archive
            is over `max_bytes` or `max_members`; or a member's data disagrees with its header.
        IntegrityError: the archive is truncated, corrupt, or not an archive.
        UnsupportedFormatError: `fmt` is unknown or not what the content is.
        BundleError: ``dest / <root name>`` already exists.

    Example:
        >>> extract_archive("churn-1.2.0.tar.gz", "/srv/models")
        PosixPath('/srv/models/churn-1.2.0')
    """
    dest = Path(dest)
    with _open_reader(archive, fmt, _spool_limit(max_bytes, max_members)) as (reader, label):
        root, entries = _scan(reader, label, max_bytes=max_bytes, max_members=max_members)
        target = dest / root
        if os.path.lexists(target):
            raise StorageError(
                f"Cannot extract {label} into {dest}: {target} already exists.\n"
                "Remove it, or extract into another folder."
            )
        _extract_into(reader, label, entries, dest, target)
    return target


def archive_root_name(
    archive: _PathLike | BinaryIO,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    fmt: str | None = None,
) -> str:
    """The name of the archive's single top-level folder, read without extracting.

    Runs every check of `extract_archive` that needs only the headers, with the same
    arguments, and raises what it raises. A seekable stream is left where it was.
    """
    with _open_reader(archive, fmt, _spool_limit(max_bytes, max_members)) as (reader, label):
        root, _ = _scan(reader, label, max_bytes=max_bytes, max_members=max_members)
    return root


# -- checks shared by both directions ------------------------------------------------------


def _name_problem(name: str) -> _Problem | None:
    """What makes `name` unsafe or unportable as a member name, if anything."""
    outside = "so it would be written outside the destination"
    if "\\" in name:
        why = "which Windows reads as a folder separator, so it could land elsewhere than named"
        return _Problem(name, "contains a backslash", why)
    if name.startswith("/"):
        return _Problem(name, "is an absolute path", outside)
    if _DRIVE.match(name):
        return _Problem(name, "starts with a drive letter", f"{outside} on Windows")
    if ".." in name.split("/"):
        why = "so it could be written outside the destination"
        return _Problem(name, "has a '..' component", why)
    if not _parts(name):
        return _Problem(name, "names no file or folder", "so it has no place in the destination")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return _Problem(name, "is not valid UTF-8", "so it would not read the same everywhere")
    return None


def _entry_problem(entry: _Entry) -> _Problem | None:
    return _name_problem(entry.name) or _kind_problem(entry)


def _kind_problem(entry: _Entry) -> _Problem | None:
    if entry.kind in ("file", "dir"):
        return None
    return _Problem(entry.name, f"is {entry.kind}", _SPECIAL_WHY)


def _collision_problem(entries: Sequence[_Entry]) -> _Problem | None:
    """Two members that would land on the same path, or a member under a file."""
    seen: dict[tuple[str, ...], _Entry] = {}
    for entry in entries:
        other = seen.setdefault(_fold(entry.parts), entry)
        if other is entry or other.kind == entry.kind == "dir":
            continue
        if other.parts == entry.parts:
            return _Problem(entry.name, "appears twice", "so one would overwrite the other")
        why = "so one would overwrite the other on macOS and Windows, which ignore case"
        return _Problem(entry.name, f"differs only in case from {other.name!r}", why)
    files = {key: entry for key, entry in seen.items() if entry.kind == "file"}
    for entry in entries:
        key = _fold(entry.parts)
        for depth in range(1, len(key)):
            if key[:depth] in files:
                reason = f"is inside {files[key[:depth]].name!r}, which is a file"
                return _Problem(entry.name, reason, "so one would overwrite the other")
    return None


def _fold(parts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part.casefold() for part in parts)


def _refusal(
    action: str, problem: _Problem, remedy: str, *, noun: str = "member"
) -> UnsafeArchiveError:
    subject = "it" if problem.member is None else f"{noun} {problem.member!r}"
    details = f"\n{problem.details}" if problem.details else ""
    return UnsafeArchiveError(
        f"Refusing to {action}: {subject} {problem.reason}, {problem.why}.{details}\n{remedy}",
        member=problem.member,
        reason=problem.reason,
    )


def _refuse(label: str, problem: _Problem, remedy: str = _TAMPERED) -> UnsafeArchiveError:
    return _refusal(f"extract {label}", problem, remedy)


def _raise_the_bound(name: str, default: int) -> str:
    return f"If you trust this archive, pass a larger {name} (default {default:,})."


def _suffix_format(name: str) -> str | None:
    lowered = name.lower()
    return next((fmt for sfx, fmt in ARCHIVE_FORMATS.items() if lowered.endswith(sfx)), None)


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UnsupportedFormatError(
            f"Unknown archive format fmt={fmt!r}: the supported formats are 'tar.gz' and "
            "'zip'.\nPass one of them as fmt.",
            found=fmt,
            supported=FORMATS,
        )


# -- writing -------------------------------------------------------------------------------


def _check_root_name(root_name: str) -> None:
    if "/" not in root_name and _name_problem(root_name) is None:
        return
    raise UsageError(
        f"root_name={root_name!r} is not a single folder name.\n"
        "Pass a plain name such as 'churn-1.2.0', without '/', '\\', '..' or a drive letter."
    )


def _write_format(dest: _PathLike | BinaryIO, fmt: str | None) -> str:
    if fmt is not None:
        _check_fmt(fmt)
    if not isinstance(dest, (str, os.PathLike)):
        if fmt is None:
            raise UnsupportedFormatError(
                "Cannot tell which archive format to write to a stream.\n"
                "Pass fmt='tar.gz' or fmt='zip'.",
                supported=FORMATS,
            )
        return fmt
    found = _suffix_format(os.fspath(dest))
    if fmt is None:
        if found is None:
            raise UnsupportedFormatError(
                f"Cannot tell the archive format of {os.fspath(dest)}: its name ends with none "
                f"of {', '.join(ARCHIVE_SUFFIXES)}.\nName it with one of them, or pass "
                "fmt='tar.gz' or fmt='zip'.",
                found=Path(dest).suffix,
                supported=FORMATS,
            )
        return found
    if found not in (None, fmt):
        raise UnsupportedFormatError(
            f"fmt={fmt!r} was passed, but {os.fspath(dest)} is named as a {found} archive.\n"
            "Rename the file, or leave fmt out to follow its name.",
            found=fmt,
            supported=found,
        )
    return fmt


def _collect(src_dir: Path) -> list[_Entry]:
    """Every file and folder under `src_dir`, sorted by path, refused if unarchivable."""
    if not src_dir.is_dir():
        raise UsageError(
            f"Cannot archive {src_dir}: it is not a directory.\n"
            "Pass the bundle's directory, e.g. <root>/<version>."
        )
    entries: list[_Entry] = []
    _walk(src_dir, "", entries)
    # By path components, not by string: a folder then comes right before its contents.
    entries.sort(key=lambda entry: entry.parts)
    problem = next(filter(None, map(_entry_problem, entries)), None)
    problem = problem or _collision_problem(entries)
    if problem is not None:
        remedy = (
            f"Rename, replace or remove it in {src_dir}: a bundle archive holds only regular "
            "files and folders with portable names, so that it extracts the same everywhere."
        )
        raise _refusal(f"archive {src_dir}", problem, remedy, noun="entry")
    return entries


def _walk(folder: Path, prefix: str, entries: list[_Entry]) -> None:
    with os.scandir(folder) as items:
        for item in items:
            name = prefix + item.name
            info = item.stat(follow_symlinks=False)
            kind = _mode_kind(info.st_mode, item.path)
            size = info.st_size if kind == "file" else 0
            entries.append(_Entry(name, kind, size, Path(item.path)))
            if kind == "dir":
                _walk(Path(item.path), f"{name}/", entries)


def _mode_kind(mode: int, path: str | None = None) -> str:
    """What a file with this `st_mode` is: "file", "dir", or a description."""
    file_type = stat.S_IFMT(mode)
    if file_type in (0, stat.S_IFREG):
        return "file"
    if file_type == stat.S_IFDIR:
        return "dir"
    if file_type == stat.S_IFLNK and path is not None:
        return f"a symbolic link to {os.readlink(path)!r}"
    return _SPECIAL_MODES.get(file_type, f"a special file (mode {mode:o})")


def _write_tar_gz(out: BinaryIO, root: str, entries: Sequence[_Entry]) -> None:
    # filename="" and mtime=0 keep where and when it was written out of the gzip header.
    with (
        gzip.GzipFile(
            filename="", mode="wb", compresslevel=_COMPRESSLEVEL, fileobj=out, mtime=0
        ) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        tar.addfile(_tar_info(root, "dir", 0))
        for entry in entries:
            info = _tar_info(f"{root}/{entry.name}", entry.kind, entry.size)
            if entry.kind == "dir":
                tar.addfile(info)
                continue
            with open(entry.ref, "rb") as src:
                tar.addfile(info, src)


def _tar_info(name: str, kind: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.REGTYPE
    info.mode = _DIR_MODE if kind == "dir" else _FILE_MODE
    info.size = size
    info.mtime = _TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_zip(out: BinaryIO, root: str, entries: Sequence[_Entry]) -> None:
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(_zip_info(root, "dir", 0), b"")
        for entry in entries:
            info = _zip_info(f"{root}/{entry.name}", entry.kind, entry.size)
            if entry.kind == "dir":
                archive.writestr(info, b"")
                continue
            with open(entry.ref, "rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def _zip_info(name: str, kind: str, size: int) -> zipfile.ZipInfo:
    is_dir = kind == "dir"
    info = zipfile.ZipInfo(f"{name}/" if is_dir else name, date_time=_ZIP_DATE_TIME)
    info.create_system = _ZIP_UNIX
    if is_dir:
        info.external_attr = (stat.S_IFDIR | _DIR_MODE) << 16 | _ZIP_DOS_DIR
    else:
        info.external_attr = (stat.S_IFREG | _FILE_MODE) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size = size  # known upfront, so zipfile picks zip64 the same way every time
    return info


_WRITERS = {"tar.gz": _write_tar_gz, "zip": _write_zip}


# -- reading -------------------------------------------------------------------------------


class _CappedReads:
    """A file wrapper for tarfile that refuses any single read over `_MAX_HEADER_READ` bytes.

    tarfile reads a GNU long name or a pax header whole, sized by its header: without a cap,
    a header declaring 8 GiB would be read into memory before any check of ours runs.
    """

    def __init__(self, raw: BinaryIO, label: str):
        self._raw = raw
        self._label = label

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > _MAX_HEADER_READ:
            reason = f"has a header that asks to read {size:,} bytes at once"
            why = f"more than the {_MAX_HEADER_READ:,} allowed, and it could exhaust memory"
            raise _refuse(self._label, _Problem(None, reason, why))
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True


class _TarGzReader:
    """Reads a tar.gz archive one header at a time."""

    fmt = "tar.gz"

    def __init__(self, fileobj: BinaryIO, label: str):
        self._label = label
        self._gzip = gzip.GzipFile(fileobj=fileobj, mode="rb")
        # Closed in close(), which _open_reader registers on its exit stack.
        self._tar = tarfile.open(fileobj=_CappedReads(self._gzip, label), mode="r:")  # noqa: SIM115

    def entries(self) -> Iterator[_Entry]:
        last = None
        while (info := self._tar.next()) is not None:
            last = info
            kind = _tar_kind(info)
            yield _Entry(info.name, kind, info.size if kind == "file" else 0, info)
        self._check_end(last)

    def _check_end(self, last: tarfile.TarInfo | None) -> None:
        # tarfile stops silently at the first block that is not a header. A zero block is
        # the end-of-archive marker; anything else is data the last header did not count.
        self._gzip.seek(self._tar.offset)
        member = last.name if last is not None else None
        why = "so its header understates its size (hiding data) or the archive is corrupt"
        if self._gzip.read(tarfile.BLOCKSIZE).strip(b"\0"):
            raise _refuse(self._label, _Problem(member, "is followed by unaccounted data", why))
        # Read on to the end of the gzip stream: only there does gzip check its trailer (the
        # CRC-32 and length of everything before), which tarfile, stopping at the
        # end-of-archive blocks, never reaches. An archive cut in its last bytes fails here.
        # What is left is tar's zero padding to its record size, bounded to stop a flood.
        padding = 0
        while chunk := self._gzip.read(_CHUNK):
            padding += len(chunk)
            if chunk.strip(b"\0") or padding > _MAX_PADDING:
                raise _refuse(self._label, _Problem(member, "is followed by unaccounted data", why))

    def open(self, entry: _Entry) -> BinaryIO:
        return self._tar.extractfile(entry.ref)

    def close(self) -> None:
        self._tar.close()
        self._gzip.close()


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.type in _TAR_LINKS:
        return f"{_TAR_LINKS[info.type]} to {info.linkname!r}"
    return _TAR_KINDS.get(info.type, f"an entry of unknown tar type {info.type!r}")


class _ZipReader:
    """Reads a zip archive from its central directory."""

    fmt = "zip"

    def __init__(self, fileobj: BinaryIO, label: str):
        self._label = label
        self._zip = zipfile.ZipFile(fileobj)

    def entries(self) -> Iterator[_Entry]:
        for info in self._zip.infolist():
            kind = _mode_kind(info.external_attr >> 16)
            if kind == "file" and info.is_dir():
                kind = "dir"
            if kind == "file":
                self._check_file(info)
            yield _Entry(info.filename, kind, info.file_size if kind == "file" else 0, info)

    def _check_file(self, info: zipfile.ZipInfo) -> None:
        if info.flag_bits & 0x1:
            fact, found = "is encrypted, which a bundle archive never is", "encrypted"
        elif info.compress_type not in _ZIP_METHODS:
            found = f"zip method {info.compress_type}"
            fact = f"uses {found}, which Python's zipfile cannot read"
        else:
            fact = ""
        if fact:
            raise UnsupportedFormatError(
                f"Cannot extract {self._label}: member {info.filename!r} {fact}.\n"
                "Recreate the archive from the bundle folder with write_archive().",
                found=found,
                supported=("stored", "deflate", "bzip2", "lzma"),
            )
        bound = _compressed_bound(info.file_size, info.compress_type)
        if bound is not None and info.compress_size > bound:
            reason = (
                f"declares {info.file_size:,} bytes but stores {info.compress_size:,} "
                "compressed bytes"
            )
            why = "more than that much data can take, so its header understates its size"
            raise _refuse(self._label, _Problem(info.filename, reason, why))

    def open(self, entry: _Entry) -> BinaryIO:
        return self._zip.open(entry.ref)

    def close(self) -> None:
        self._zip.close()


def _compressed_bound(size: int, method: int) -> int | None:
    """Most bytes `size` bytes can take once stored or deflated; None for other methods."""
    if method == zipfile.ZIP_STORED:
        return size
    if method == zipfile.ZIP_DEFLATED:  # zlib's conservative deflateBound(), plus framing
        return size + (size + 7) // 8 + (size + 63) // 64 + 64
    return None


_READERS = {"tar.gz": _TarGzReader, "zip": _ZipReader}


def _spool_limit(max_bytes: int, max_members: int) -> int:
    """Most bytes a legitimate archive within the bounds can take, compressed."""
    # Deflate grows incompressible data by well under 1/64; tar needs at most a header,
    # a pax header and padding per member (4 KiB is ample), plus its end-of-archive record.
    return max_bytes + max_bytes // 64 + 4096 * (max_members + 3)


@contextmanager
def _open_reader(
    archive: _PathLike | BinaryIO, fmt: str | None, spool_limit: int
) -> Iterator[tuple[_Reader, str]]:
    with ExitStack() as stack:
        if isinstance(archive, (str, os.PathLike)):
            label = os.fspath(archive)
            fileobj = stack.enter_context(open(label, "rb"))
        else:
            # fsspec files have a path, Python's files a name (an int for a pipe).
            name = getattr(archive, "name", None) or getattr(archive, "path", None)
            label = name if isinstance(name, str) else "the archive stream"
            fileobj = _seekable(archive, label, spool_limit, stack)
        found = _detect_format(fileobj, label, fmt)
        try:
            reader = _READERS[found](fileobj, label)
        except _READ_ERRORS as exc:
            raise _unreadable(label, found, exc) from exc
        stack.callback(reader.close)
        yield reader, label


def _seekable(stream: BinaryIO, label: str, limit: int, stack: ExitStack) -> BinaryIO:
    """`stream` itself if it can seek (put back where it was on exit), else a spooled copy."""
    seekable = getattr(stream, "seekable", None)
    if seekable is not None and seekable():
        stack.callback(stream.seek, stream.tell())
        return stream
    spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115  (closed by stack)
    copied = 0
    while chunk := stream.read(_CHUNK):
        copied += len(chunk)
        if copied > limit:
            reason = f"is over {limit:,} bytes long"
            why = "more than an archive within max_bytes and max_members can take"
            remedy = _raise_the_bound("max_bytes", DEFAULT_MAX_BYTES)
            raise _refuse(label, _Problem(None, reason, why), remedy)
        spool.write(chunk)
    spool.seek(0)
    return spool


def _detect_format(fileobj: BinaryIO, label: str, fmt: str | None) -> str:
    if fmt is not None:
        _check_fmt(fmt)
    start = fileobj.tell()
    head = fileobj.read(4)
    fileobj.seek(start)
    found = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)
    if found is None:
        raise IntegrityError(
            f"{label} is neither a tar.gz nor a zip archive: it starts with {head!r}.\n"
            "It may be truncated, or not an archive at all; copy or download it again.",
            mismatched=[label],
        )
    if fmt is not None and fmt != found:
        raise UnsupportedFormatError(
            f"{label} is a {found} archive, but fmt={fmt!r} was passed.\n"
            f"Pass fmt={found!r}, or leave fmt out to detect it from the content.",
            found=found,
            supported=fmt,
        )
    return found


def _unreadable(label: str, fmt: str, exc: BaseException) -> IntegrityError:
    return IntegrityError(
        f"{label} is not a readable {fmt} archive ({type(exc).__name__}: {exc}).\n"
        "It is probably truncated or corrupt; copy or download it again.",
        mismatched=[label],
    )


def _scan(
    reader: _Reader, label: str, *, max_bytes: int, max_members: int
) -> tuple[str, list[_Entry]]:
    """Every member, checked; returns the root name and the members, or raises."""
    entries: list[_Entry] = []
    try:
        for entry in reader.entries():
            if len(entries) == max_members:
                reason = f"has more than max_members={max_members:,} members"
                why = "and a flood of members can exhaust the disk's inodes"
                remedy = _raise_the_bound("max_members", DEFAULT_MAX_MEMBERS)
                raise _refuse(label, _Problem(None, reason, why), remedy)
            problem = _entry_problem(entry)
            if problem is not None:
                raise _refuse(label, problem)
            entries.append(entry)
    except _READ_ERRORS as exc:
        raise _unreadable(label, reader.fmt, exc) from exc
    problem = _root_problem(entries) or _collision_problem(entries)
    if problem is not None:
        raise _refuse(label, problem)
    _check_declared_size(label, entries, max_bytes)
    return entries[0].parts[0], entries


def _root_problem(entries: Sequence[_Entry]) -> _Problem | None:
    """Unless every member is under one top-level folder, what is wrong."""
    one_folder = "and a bundle archive holds exactly one top-level folder"
    if not entries:
        return _Problem(None, "has no members", one_folder)
    root = entries[0].parts[0]
    for entry in entries:
        if entry.parts[0] != root:
            tops = sorted({other.parts[0] for other in entries})
            details = f"The top-level names are:\n{bullet_list(tops)}"
            return _Problem(entry.name, f"is not under the folder {root!r}", one_folder, details)
        if entry.parts == (root,) and entry.kind != "dir":
            return _Problem(entry.name, "is a file at the top level", one_folder)
    return None


def _check_declared_size(label: str, entries: Sequence[_Entry], max_bytes: int) -> None:
    files = [entry for entry in entries if entry.kind == "file"]
    declared = sum(entry.size for entry in files)
    if declared > max_bytes:
        plural = "" if len(files) == 1 else "s"
        reason = f"declares {declared:,} bytes in {len(files):,} file{plural}"
        why = f"more than max_bytes={max_bytes:,}, and a decompression bomb would fill the disk"
        remedy = _raise_the_bound("max_bytes", DEFAULT_MAX_BYTES)
        raise _refuse(label, _Problem(None, reason, why), remedy)


def _extract_into(
    reader: _Reader, label: str, entries: Sequence[_Entry], dest: Path, target: Path
) -> None:
    """Write checked `entries` to a staging folder in `dest`, then rename it to `target`."""
    dest_existed = dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".{target.name}.{os.urandom(4).hex()}.partial"
    staging.mkdir()
    try:
        for entry in entries:
            _extract_entry(reader, label, entry, staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not dest_existed:
            with contextlib.suppress(OSError):
                dest.rmdir()
        raise


def _extract_entry(reader: _Reader, label: str, entry: _Entry, staging: Path) -> None:
    path = staging.joinpath(*entry.parts[1:])
    # The names were checked and no link is ever extracted; resolving again means a gap in
    # those checks still cannot write outside dest.
    if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(staging)):
        why = "so it would be written outside the destination"
        raise _refuse(label, _Problem(entry.name, "resolves outside the destination", why))
    if entry.kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "xb") as out:
        for chunk in _member_chunks(reader, label, entry):
            # Count what is actually written, and stop at the declared size: the declared
            # sizes were checked against max_bytes, so a lying header cannot get past it.
            written += len(chunk)
            if written > entry.size:
                break
            out.write(chunk)
    if written != entry.size:
        at_least = "at least " if written > entry.size else ""
        reason = f"holds {at_least}{written:,} bytes, but its header declares {entry.size:,}"
        why = "so its header lies about it or the archive is corrupt"
        raise _refuse(label, _Problem(entry.name, reason, why))


def _member_chunks(reader: _Reader, label: str, entry: _Entry) -> Iterator[bytes]:
    try:
        with reader.open(entry) as src:
            while chunk := src.read(_CHUNK):
                yield chunk
    except _READ_ERRORS as exc:
        reason = f"has data that does not match its header ({exc})"
        why = "so its header lies about it or the archive is corrupt"
        raise _refuse(label, _Problem(entry.name, reason, why)) from exc
