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

from ..errors import ManifestError, UnsupportedFormatError, bullet_list
from .layout import MANIFEST_FILE, STEP_EXTENSIONS
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
        check_nesting(data, source=source)
        validate(data, source=source)
        known = {f.name for f in fields(cls)}
        manifest = cls(**{key: value for key, value in data.items() if key in known})
        check_parts(manifest, source=source)
        return manifest

    @property
    def parts_executing_code(self) -> list[dict[str, Any]]:
        """Steps and custom objects whose loading executes stored code (pickles)."""
        parts = [*self.preprocess, *self.postprocess, *self.custom_objects]
        return [part for part in parts if executes_code(part)]

    @property
    def backend(self) -> dict[str, Any] | None:
        """The Keras backend the model was saved under: ``{"name", "version"}``.

        None for bundles written before keras-bundle recorded it (they were saved under
        TensorFlow, the only backend keras-bundle ran on then; `environment` has its
        version).
        """
        return self.model.get("backend")

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
    except RecursionError as exc:
        raise ManifestError(
            f"{source} nests deeper than Python's JSON reader goes: no manifest does."
        ) from exc
    return Manifest.from_dict(data, source=source)


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``manifest.json`` from a bundle directory. Imports nothing.

    The file is opened without following a link and without blocking: a FIFO or a link in
    its place is refused, never read.

    Raises:
        ManifestError: the file is missing, not a regular file, not JSON, or does not match
            the schema.
        UnsupportedFormatError: the bundle uses a newer format version.
    """
    from .snapshot import read_regular

    path = Path(directory) / MANIFEST_FILE
    try:
        text = read_regular(path, what="manifest")
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ManifestError(
            f"{path} does not exist: {directory} is not a bundle version directory."
        ) from exc
    return parse_manifest(text, source=str(path))


MAX_NESTING = 100


def check_nesting(data: Any, *, source: str) -> None:
    """Refuse JSON nested deeper than `MAX_NESTING` (metadata 100,000 deep), iteratively."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ManifestError(
                f"{source} nests JSON deeper than {MAX_NESTING} levels; a manifest (metadata "
                "included) never needs that.\nThe file was edited by hand or written by a "
                "broken tool; restore it from the release."
            )
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)


EXAMPLE_SUFFIXES = (".parquet", ".npy")


def check_parts(manifest: Manifest, *, source: str) -> None:
    """Refuse a schema-valid manifest whose parts are not files it lists, of their kind.

    Every path the manifest names (model, steps, pickled custom objects, the example and
    its outputs, the profile) must be a file of its ``files`` table with the suffix its
    reader expects; the model needs inputs and outputs of known dtypes.

    Raises:
        ManifestError: listing every problem.
    """
    import numpy as np

    files = set(manifest.files)
    problems: list[str] = []

    def listed(where: str, value: Any, suffixes: tuple[str, ...]) -> None:
        if value not in files:
            problems.append(f"{where}: {value!r} is not a file listed in 'files'")
        elif not str(value).endswith(suffixes):
            problems.append(f"{where}: {value!r} is not a {' or '.join(suffixes)} file")

    model = manifest.model
    listed("model/file", model["file"], (".keras",))
    for side in ("inputs", "outputs"):
        if not model[side]:
            problems.append(f"model/{side}: a model has at least one; the list is empty")
        for index, tensor in enumerate(model[side]):
            try:  # "string": a Keras string tensor (text models)
                dtype = np.dtype(tensor["dtype"])
                known = dtype.fields is None and dtype.subdtype is None
            except (TypeError, ValueError):
                known = tensor["dtype"] == "string"
            if not known:
                problems.append(f"model/{side}/{index}: unknown dtype {tensor['dtype']!r}")
            if any(d is not None and d < 0 for d in tensor["shape"]):
                problems.append(f"model/{side}/{index}: negative size in {tensor['shape']}")
    for stage in ("preprocess", "postprocess"):
        for index, record in enumerate(getattr(manifest, stage)):
            suffix = STEP_EXTENSIONS.get(record["serializer"], "")
            listed(f"{stage}/{index}/file", record["file"], (f".{suffix}",))
    for index, record in enumerate(manifest.custom_objects):
        if record["storage"] == "value":
            listed(f"custom_objects/{index}/file", record["file"], (".pkl",))
        elif record["file"] is not None:
            problems.append(f"custom_objects/{index}/file: a reference stores no file")
    example = manifest.example
    if example is not None:
        inside = sorted(name for name in files if name.startswith(f"{example['input']}/"))
        if inside:
            for name in inside:
                nested = "/" in name[len(example["input"]) + 1 :]
                if nested or not name.endswith(EXAMPLE_SUFFIXES):
                    problems.append(f"example/input: {name!r} is not a .parquet or .npy file")
        else:
            listed("example/input", example["input"], EXAMPLE_SUFFIXES)
        listed("example/scores", example["scores"], (".npy", ".npz"))
        if example["predictions"] is not None:
            listed("example/predictions", example["predictions"], (".npy", ".npz"))
    if manifest.profile is not None:
        listed("profile/file", manifest.profile["file"], (".json",))
        listed("profile/arrays", manifest.profile["arrays"], (".npz",))
    if problems:
        raise ManifestError(
            f"{source} names parts that are not files of the bundle:\n"
            + bullet_list(problems, limit=10)
            + "\nThe file was edited by hand or written by a broken tool; restore it from "
            "the release."
        )
