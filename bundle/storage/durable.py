"""Durable writes on a local disk: flush files and renames, swap folders, lock work in progress.

- `fsync_dir`, `fsync_tree`, `atomic_file`: what is written survives a crash once published.
- `exchange`: swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``), so replacing a version never leaves its name empty.
- `work_folder`, `work_file`, `in_use`, `quiet`: a folder or file that a live process is
  writing holds an advisory lock; clean-up (`bundle gc`) skips locked ones, whatever their
  age, and tells a dead process's leftovers apart without guessing from their age.
- `disk_full`: is an ``OSError`` the disk (or quota) being full.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:  # POSIX only: on Windows work folders are told apart by age alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_file",
    "disk_full",
    "exchange",
    "fsync_dir",
    "fsync_tree",
    "in_use",
    "quiet",
    "work_file",
    "work_folder",
]


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX; Windows cannot open a folder this way)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file and directory below `directory` to disk before it is published."""
    for dirpath, _dirnames, filenames in os.walk(directory):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


@contextmanager
def atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside `dest`, renamed to `dest` only once complete and on disk."""
    tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.tmp")
    # os.open honours the umask, where mkstemp would make a release archive private (0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


# ---------------------------------------------------------------------------- atomic swap
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h
# The file system cannot swap (NFS, FUSE, FAT...) or the kernel/libc predates the call.
_CANNOT_SWAP = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


def _swap_call():  # -> a callable(a: bytes, b: bytes) -> int, or None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover  (Windows)
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        call = libc.renameat2
        path_at = [ctypes.c_int, ctypes.c_char_p]
        call.argtypes = [*path_at, *path_at, ctypes.c_uint]
        return lambda a, b: call(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE)
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):  # pragma: no cover
        call = libc.renamex_np
        call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        return lambda a, b: call(a, b, _RENAME_SWAP)
    return None  # pragma: no cover


_SWAP = _swap_call()


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing folders (or files) in one atomic step; False if the OS cannot.

    After a True return, `first` holds what `second` held and the other way round; at no
    moment is either name missing, whatever crashes. False (nothing changed) on systems or
    file systems without an atomic swap: the caller then needs another protocol.

    Raises the audit event ``bundle.storage.exchange`` with both paths first.

    Raises:
        OSError: the swap is supported but failed (a name is missing, permissions, ...).
    """
    if _SWAP is None:
        return False
    # A foreign call raises no audit event of its own: name the swap for audit hooks.
    sys.audit("bundle.storage.exchange", str(first), str(second))
    if _SWAP(os.fsencode(first), os.fsencode(second)) == 0:
        return True
    code = ctypes.get_errno()
    if code in _CANNOT_SWAP:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


# ---------------------------------------------------------------------------- work folders
# A process's work folder (or temp file) is locked (``flock``, exclusive) by its creator for
# as long as it lives; the kernel drops the lock when the process ends, even by kill -9.
# Between creating a folder and locking it there is a moment when a live folder is not
# locked yet: creators hold a shared lock on the parent folder across that moment, and
# clean-up scans a parent holding it exclusively (`quiet`), so it never sees that moment.


@contextmanager
def _creating(parent: Path) -> Iterator[None]:
    """Hold a shared lock on `parent` while a new work folder or file gets its own lock."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a clean-up scans `parent`
        yield
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextmanager
def work_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder ``<parent>/<prefix><random>``, locked while the block runs, then removed.

    The lock tells clean-up that a live process owns the folder; a folder that is not
    locked belongs to nobody. Whatever the block leaves at the folder's name is removed at
    the end (nothing, when the block renamed the folder away to publish it).
    """
    path = Path(parent) / f"{prefix}{uuid.uuid4().hex}"
    with _creating(Path(parent)):
        path.mkdir()
        fd = os.open(path, os.O_RDONLY)
        _lock(fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


@contextmanager
def work_file(parent: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    """A new file ``<parent>/<prefix><random>`` open for writing and locked, then removed."""
    path = Path(parent) / f"{prefix}{uuid.uuid4().hex}"
    with _creating(Path(parent)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        _lock(fd)
    try:
        yield path, fd
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def quiet(parent: Path) -> Iterator[bool]:
    """While the block runs, no work folder or file can be starting in `parent`: True if
    so (the block then sees every live one locked); False if one is starting right now."""
    if fcntl is None:  # pragma: no cover
        yield False
        return
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def in_use(path: Path) -> bool:
    """True if a live process holds the lock of the work folder or file `path`.

    False where locks cannot be taken (Windows): there, only age tells.
    """
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's own lock
    return False


_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def disk_full(exc: BaseException) -> OSError | None:
    """The "no space left" / "quota exceeded" ``OSError`` in `exc` or its causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return current
        current = current.__cause__ or current.__context__
    return None
