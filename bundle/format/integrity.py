"""File hashes and verification of a version directory against its manifest's file table.

Nothing here imports Keras or unpickles anything: the bytes are checked before any part is
read (the trust decision lives in `trust`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHUNK_SIZE = 1 << 20

__all__ = ["file_table", "hash_file", "list_files", "verify_files", "verify_files_for"]


def hash_file(path: Path) -> str:
    """The sha256 of a file, hex-encoded."""
    digest = hashlib.sha256()
    # Hash in 1 MiB chunks: model files can exceed a serving pod's memory.
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(directory: Path) -> list[str]:
    """Every regular file below `directory` as sorted POSIX relative paths, minus the manifest
    and the signature (`layout.UNLISTED_FILES`).

    Links, FIFOs and other special entries are not files of a bundle: they are skipped
    here (and refused by `verify_files`), never followed or opened.
    """
    from .snapshot import scan_directory

    return scan_directory(Path(directory))[0]


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256": ..., "size": ...}}`` for every file but the manifest."""
    directory = Path(directory)
    return {
        name: {"sha256": hash_file(directory / name), "size": (directory / name).stat().st_size}
        for name in list_files(directory)
    }


def verify_files(directory: Path, recorded: Mapping[str, Mapping[str, Any]], *, label: str) -> None:
    """Check that the files on disk are exactly the ones the manifest recorded.

    Every entry is checked before it is opened: a link, FIFO, device or socket is refused
    (opening never follows a link and never blocks). `snapshot.open_snapshot` does the same
    and keeps the files it verified, for loading.

    Raises:
        IntegrityError: naming each mismatched, missing, unlisted or irregular file.
    """
    from .snapshot import verify_directory

    verify_directory(Path(directory), recorded, label=label)


def verify_files_for(
    directory: Path, recorded: Mapping[str, Mapping[str, Any]], *, label: str, purpose: str
) -> None:
    """`verify_files`, its `IntegrityError` prefixed by `purpose` (what the check guards).

    Raises:
        IntegrityError: as `verify_files`, the message starting with `purpose`.
    """
    from ..errors import IntegrityError

    try:
        verify_files(directory, recorded, label=label)
    except IntegrityError as exc:
        raise IntegrityError(
            f"{purpose} {exc}",
            mismatched=exc.mismatched,
            missing=exc.missing,
            unexpected=exc.unexpected,
        ) from exc
