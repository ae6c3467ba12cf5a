"""The on-disk format: layout, manifest, hashes, trust policy, environment, golden outputs, profile.

Nothing in this package imports Keras or unpickles anything: it reads and writes the
bundle's description and decides, from bytes and the manifest alone, whether a bundle may
be constructed.
"""

from __future__ import annotations

from .integrity import file_table, hash_file, verify_files
from .manifest import FORMAT_VERSION, Manifest, parse_manifest, read_manifest, write_manifest
from .trust import PLUMBING, check_trust, executes_code, trust_parts

__all__ = [
    "FORMAT_VERSION",
    "PLUMBING",
    "Manifest",
    "check_trust",
    "executes_code",
    "file_table",
    "hash_file",
    "parse_manifest",
    "read_manifest",
    "trust_parts",
    "verify_files",
    "write_manifest",
]
