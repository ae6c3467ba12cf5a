"""The manifest: `Manifest` dataclass <-> ``manifest.json``, validated by JSON Schema.

The manifest is the single description of a bundle on disk. It is written last, so its
presence makes a version visible; it is validated on write and on read against
``schemas/manifest.schema.json`` (JSON Schema 2020-12), and reading it imports nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ManifestError, UnsupportedFormatError
from .layout import MANIFEST_FILE
from .trust import executes_code

FORMAT_NAME = "keras-bundle"
FORMAT_VERSION = 1
"""The on-disk format version this package writes and the newest it reads.

Bump it only when a reader of the previous version would misread a new bundle (a field
changes meaning, a new part must be understood to predict correctly). Adding a new schema
file ``manifest.v<N>.schema.json`` and keeping the readers of every older version at least
as strict as today is part of the bump; a bundle with a newer version is refused.
"""

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "Manifest",
    "ManifestError",
    "read_manifest",
    "write_manifest",
]


@dataclass(frozen=True)
class Manifest:
    """Everything recorded about a bundle. Closed: unknown keys are rejected on read."""

    name: str
    version: str
    created: str
    environment: dict[str, str | None]
    model: dict[str, Any]
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    postprocess: list[dict[str, Any]] = field(default_factory=list)
    custom_objects: list[dict[str, Any]] = field(default_factory=list)
    input_schema: dict[str, Any] | None = None
    example: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The training profile's files (`bundle.format.profile`), None without one. Optional in
    # the schema and left out of manifest.json when None, so bundles without a profile are
    # written exactly as before and older readers keep reading them.
    profile: dict[str, Any] | None = None
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The manifest as the JSON-ready dict written to ``manifest.json``."""
        data = asdict(self)
        if data["profile"] is None:
            del data["profile"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = MANIFEST_FILE) -> Manifest:
        """Validate `data` against the schema and build a manifest from it.

        Raises:
            UnsupportedFormatError: the format version is newer than this package reads.
            ManifestError: the data does not match the schema.
        """
        check_format_version(data, source=source)
        validate(data, source=source)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @property
    def parts_executing_code(self) -> list[dict[str, Any]]:
        """Steps and custom objects whose loading executes stored code (pickles)."""
        parts = [*self.preprocess, *self.postprocess, *self.custom_objects]
        return [part for part in parts if executes_code(part)]

    @property
    def label(self) -> str:
        """How messages name this bundle: ``bundle 'churn' 1.2.0``."""
        return f"bundle {self.name!r} {self.version}"


def check_format_version(data: Any, *, source: str) -> None:
    """Refuse a manifest of another format or of a newer format version than we read."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(
            f"{source} is not a keras-bundle manifest: its 'format' is {found!r}, "
            f"expected {FORMAT_NAME!r}."
        )
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        from .._version import __version__

        raise UnsupportedFormatError(
            f"{source} uses bundle format version {version}, but keras-bundle {__version__} "
            f"reads format versions up to {FORMAT_VERSION}.\n"
            "Upgrade keras-bundle (pip install -U keras-bundle) to load this bundle.",
            found=version,
            supported=FORMAT_VERSION,
        )


@cache
def _validator() -> Any:
    import jsonschema

    text = resources.files("bundle").joinpath("schemas/manifest.schema.json").read_text("utf-8")
    schema = json.loads(text)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    # jsonschema checks "date-time" only when the optional rfc3339-validator is installed;
    # without this fallback a manifest's "created" would silently go unchecked.
    format_checker = jsonschema.FormatChecker()
    format_checker.checkers = dict(validator_cls.FORMAT_CHECKER.checkers)
    if "date-time" not in format_checker.checkers:
        format_checker.checks("date-time", raises=ValueError)(_is_date_time)
    return validator_cls(schema, format_checker=format_checker)


_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _is_date_time(instance: Any) -> bool:
    """RFC 3339 date-time: ``2024-05-01T12:00:00+00:00`` (an offset or Z is required)."""
    if not isinstance(instance, str):
        return True
    if not _DATE_TIME.match(instance):
        return False
    datetime.fromisoformat(instance[:-1] + "+00:00" if instance[-1] in "Zz" else instance)
    return True


def validate(data: dict[str, Any], *, source: str = MANIFEST_FILE) -> None:
    """Validate a manifest dict against the JSON Schema, listing every violation."""
    errors = sorted(_validator().iter_errors(data), key=lambda err: list(err.absolute_path))
    if not errors:
        return
    lines = []
    for err in errors[:5]:
        where = "/".join(str(part) for part in err.absolute_path) or "(top level)"
        lines.append(f"- {where}: {err.message}")
    if len(errors) > 5:
        lines.append(f"... ({len(errors) - 5} more)")
    raise ManifestError(
        f"{source} does not match the keras-bundle manifest schema "
        f"(format version {data.get('format_version')}):\n" + "\n".join(lines) + "\n"
        "The file was edited by hand or written by a broken tool; restore it from the release."
    )


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    """Validate and write ``manifest.json`` into `directory`, flushed to disk."""
    data = manifest.to_dict()
    validate(data, source=f"{manifest.name} {manifest.version} manifest")
    path = Path(directory) / MANIFEST_FILE
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def parse_manifest(text: str | bytes, *, source: str) -> Manifest:
    """Parse and validate the text of a ``manifest.json``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{source} is not valid JSON: {exc}.") from exc
    return Manifest.from_dict(data, source=source)


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``manifest.json`` from a bundle directory. Imports nothing.

    Raises:
        ManifestError: the file is missing, not JSON, or does not match the schema.
        UnsupportedFormatError: the bundle uses a newer format version.
    """
    path = Path(directory) / MANIFEST_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{path} does not exist: {directory} is not a bundle version directory."
        ) from exc
    return parse_manifest(text, source=str(path))
