"""File hashes and verification of a version directory against its manifest's file table.

Nothing here imports Keras or unpickles anything: the bytes are checked before any part is
read (the trust decision lives in `trust`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, bullet_list
from .layout import MANIFEST_FILE

CHUNK_SIZE = 1 << 20
IGNORED_NAMES = frozenset({MANIFEST_FILE})

__all__ = ["file_table", "hash_file", "list_files", "verify_files"]


def hash_file(path: Path) -> str:
    """The sha256 of a file, hex-encoded."""
    digest = hashlib.sha256()
    # Hash in 1 MiB chunks: model files can exceed a serving pod's memory.
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(directory: Path) -> list[str]:
    """Every regular file below `directory` as sorted POSIX relative paths, minus the manifest."""
    directory = Path(directory)
    found = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        for filename in filenames:
            relative = (Path(dirpath) / filename).relative_to(directory).as_posix()
            if relative not in IGNORED_NAMES:
                found.append(relative)
    return sorted(found)


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256": ..., "size": ...}}`` for every file but the manifest."""
    directory = Path(directory)
    return {
        name: {"sha256": hash_file(directory / name), "size": (directory / name).stat().st_size}
        for name in list_files(directory)
    }


def verify_files(directory: Path, recorded: Mapping[str, Mapping[str, Any]], *, label: str) -> None:
    """Check that the files on disk are exactly the ones the manifest recorded.

    Raises:
        IntegrityError: naming each mismatched, missing or unlisted file.
    """
    directory = Path(directory)
    on_disk = set(list_files(directory))
    missing = sorted(set(recorded) - on_disk)
    unexpected = sorted(on_disk - set(recorded))
    mismatched, details = [], []
    for name in sorted(set(recorded) & on_disk):
        expected = recorded[name]
        size = (directory / name).stat().st_size
        digest = hash_file(directory / name)
        if size != expected["size"] or digest != expected["sha256"]:
            mismatched.append(name)
            details.append(
                f"{name}: {size:,} bytes on disk, {expected['size']:,} recorded; "
                f"sha256 {digest[:8]}... vs {expected['sha256'][:8]}..."
            )
    if not (missing or unexpected or mismatched):
        return
    raise IntegrityError(
        _integrity_message(label, len(recorded), details, missing, unexpected, mismatched),
        mismatched=mismatched,
        missing=missing,
        unexpected=unexpected,
    )


def _integrity_message(
    label: str,
    total: int,
    details: list[str],
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
) -> str:
    parts = []
    if details:
        parts.append(
            f"{len(details)} of {total} files in {label} do not match the manifest:\n"
            + bullet_list(details)
        )
        shorter = [d for d in details if _is_truncated(d)]
        if shorter and len(shorter) == len(details):
            parts.append(
                "The files are shorter than recorded: the copy was probably interrupted "
                "(or they were replaced)."
            )
    if missing:
        parts.append(
            f"{len(missing)} file(s) listed in the manifest of {label} are missing:\n"
            + bullet_list(missing)
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} file(s) in {label} are not listed in its manifest:\n"
            + bullet_list(unexpected)
        )
    parts.append(
        "The bundle was modified after it was saved. Restore it from the original release; "
        "a bundle is never edited in place."
    )
    return "\n".join(parts)


def _is_truncated(detail: str) -> bool:
    sizes = detail.split(": ", 1)[1].split(";")[0]
    on_disk, recorded = (int(s.split()[0].replace(",", "")) for s in sizes.split(", "))
    return on_disk < recorded
