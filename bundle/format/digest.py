"""The bundle digest: one sha256 naming a version's content wherever it is stored.

The manifest records every other file's sha256 and size, so one hash of the manifest pins
every byte of the bundle. It is taken over the manifest's canonical form (`canonical_json`:
compact JSON, keys sorted, UTF-8), not over the bytes of ``manifest.json``, so a directory,
an archive, an object-storage copy and an OCI artifact of one version all have the same
digest, whatever whitespace a copy's manifest was written with. It is::

    sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8"))

written ``sha256:<64 hex digits>``, the form OCI registries use for their digests. The
signature file (`layout.SIGNATURE_FILE`) is outside it: signing a bundle does not change
what it is.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DigestMismatchError, ManifestError, UsageError
from .layout import MANIFEST_FILE

PREFIX = "sha256:"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

__all__ = ["canonical_json", "check_digest", "digest_of", "manifest_digest", "require_digest"]


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """The manifest's canonical bytes: compact JSON with sorted keys, UTF-8."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def manifest_digest(manifest: Mapping[str, Any] | bytes | str) -> str:
    """The bundle digest of a manifest (its JSON text, or the parsed document).

    Raises:
        ManifestError: the text is not JSON.
    """
    if isinstance(manifest, (bytes, str)):
        try:
            manifest = json.loads(manifest)
        except ValueError as exc:
            raise ManifestError(f"{MANIFEST_FILE} is not valid JSON: {exc}.") from exc
    return PREFIX + hashlib.sha256(canonical_json(manifest)).hexdigest()


def digest_of(directory: Path) -> str:
    """The bundle digest of the version directory `directory` (reads its manifest only)."""
    return manifest_digest((Path(directory) / MANIFEST_FILE).read_bytes())


def check_digest(digest: str, *, argument: str = "digest") -> str:
    """`digest` if it is written ``sha256:<64 lowercase hex digits>``.

    Raises:
        UsageError: naming the argument and the expected form.
    """
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise UsageError(
            f"{argument}={digest!r} is not a bundle digest: expected 'sha256:' followed by 64 "
            "lowercase hex digits, as `bundle inspect` prints it."
        )
    return digest


def require_digest(expected: str, found: str, *, label: str, where: str) -> None:
    """Refuse content whose digest is not the pinned one.

    Raises:
        DigestMismatchError: with both digests and where the content came from.
    """
    if found == expected:
        return
    raise DigestMismatchError(
        f"{label} at {where} has digest {found}, not the pinned {expected}: it is other "
        "content than the one you pinned (another version, or a changed copy).\n"
        "Load the release that has that digest, or pin the digest `bundle inspect` prints "
        "for this one if you trust it.",
        expected=expected,
        found=found,
    )
