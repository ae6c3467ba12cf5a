"""File hashes, verification against the manifest, and the trust policy.

Nothing here imports Keras or unpickles anything: it decides, from bytes and the manifest
alone, whether a bundle may be constructed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import IntegrityError, UnsafeLoadError, bullet_list

CHUNK_SIZE = 1 << 20
IGNORED_NAMES = frozenset({"manifest.json"})
# Serializers whose loading runs no code from the bundle (Keras' own safe_mode guards the
# model file). Anything else is treated as a pickle, whatever the manifest claims.
SAFE_SERIALIZERS = frozenset({"native", "keras", "reference"})
# Plumbing every pickle references; listing it would hide what matters in a refusal.
PLUMBING = ("builtins.", "copyreg.", "_codecs.", "numpy.", "cloudpickle.", "joblib.")

__all__ = ["check_trust", "executes_code", "file_table", "hash_file", "verify_files"]


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


def executes_code(part: Mapping[str, Any]) -> bool:
    """True if loading this manifest record may run code stored in the bundle.

    Decided from the serializer, not only from the record's ``executes_code`` flag: the
    flag is written by whoever made the bundle, so a pickle flagged ``false`` is still a
    pickle. Only the serializers in `SAFE_SERIALIZERS` can be loaded without trust.
    """
    if part.get("executes_code") or part.get("storage") == "value":
        return True
    serializer = part.get("serializer")
    if serializer is None and part.get("storage") == "reference":
        serializer = "reference"
    if serializer == "reference" and not _plausible_reference(part):
        return True
    return serializer not in SAFE_SERIALIZERS


def _plausible_reference(part: Mapping[str, Any]) -> bool:
    """A by-reference custom object names a class or function of an installed package.

    Importing it runs that package's import code, as any ``import`` does; what must not
    happen without trust is a manifest steering the import to ``__main__``, a local
    function, or a standard-library module (no Keras custom object lives there, but some
    of its modules act on import).
    """
    module, qualname = str(part.get("module", "")), str(part.get("qualname", ""))
    top = module.split(".")[0]
    local = top == "__main__" or "<locals>" in qualname
    return bool(top) and not local and top not in sys.stdlib_module_names


def check_trust(parts: Iterable[Mapping[str, Any]], *, trusted: bool, label: str) -> None:
    """Refuse, before anything is unpickled, to load parts whose loading executes code.

    Args:
        parts: manifest records with ``file``, ``serializer``, ``executes_code`` and
            optionally ``imports`` (the globals the pickle references, recorded at save).
        trusted: the caller's explicit opt-in.
        label: how to name the bundle in the message.

    Raises:
        UnsafeLoadError: listing each file, its serializer and what it references.
    """
    unsafe = [part for part in parts if executes_code(part)]
    if trusted or not unsafe:
        return
    described = []
    for part in unsafe:
        imports = [i for i in part.get("imports") or [] if not i.startswith(PLUMBING)]
        inside = ", ".join(imports[:8])
        if len(imports) > 8:
            inside += f", ... ({len(imports) - 8} more)"
        what = part.get("class") or f"{part.get('module')}.{part.get('qualname')}"
        pickle = f"{part['serializer']} pickle" if part.get("serializer") else "pickle"
        described.append(
            f"{part['file']}: a {pickle} of {what}" + (f" (references {inside})" if inside else "")
        )
    raise UnsafeLoadError(
        f"Refusing to load {label}: {len(unsafe)} part(s) are pickles, and unpickling runs "
        "code stored in the bundle:\n"
        + bullet_list(described, limit=10)
        + "\nIf you made this bundle or trust its source: Bundle.load(path, trusted=True)"
        " (or `--trusted` on the command line).",
        parts=[
            (part["file"], part.get("serializer") or "pickle", part.get("imports") or [])
            for part in unsafe
        ],
    )
