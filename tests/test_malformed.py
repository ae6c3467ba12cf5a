"""Every malformed bundle is refused with a BundleError subclass: never another exception,
never a hang.

Hostile bundles are built from a real saved one with the manifest rewritten and every hash
recomputed, so integrity checks pass and only the reading code stands between the bytes and
a raw traceback. Explicit cases first (each crashed the loader with ValueError, IndexError,
TypeError, IsADirectoryError, FileNotFoundError or RecursionError before), then a property
test that generates manifests, schema-valid and not.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import rehash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bundle
from bundle import Bundle, BundleError, ManifestError
from bundle.cli import cli

CASE_SECONDS = 30


@pytest.fixture(scope="module")
def base(tabular_bundle) -> tuple[Path, dict[str, Any]]:
    path, _ = tabular_bundle
    return path, json.loads((path / "manifest.json").read_text())


class Hung(Exception):
    """A case took longer than `CASE_SECONDS`: the failure this module exists to catch."""


@contextlib.contextmanager
def deadline(seconds: float = CASE_SECONDS) -> Iterator[None]:
    """Raise `Hung` in this (main) thread if the block runs longer than `seconds`.

    SIGALRM interrupts a blocking open() of a FIFO too: the handler's exception ends it.
    """

    def hung(signum: int, frame: Any) -> None:
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def build(base: tuple[Path, dict[str, Any]], edit: Callable[[dict, Path], Any]) -> Path:
    """A copy of the base bundle with `edit(manifest, directory)` applied and hashes redone."""
    source, manifest = base
    target = Path(tempfile.mkdtemp(prefix="malformed-")) / "1.0.0"
    shutil.copytree(source, target)
    data = copy.deepcopy(manifest)
    edit(data, target)
    (target / "manifest.json").write_text(json.dumps(data))
    if isinstance(data.get("files"), dict):
        rehash(target, data)
    text = (target / "manifest.json").read_text()
    if DEEP_MARK in text:  # too deep for json.dumps: spliced in as text
        deep = '{"deeper": ' * DEEP["depth"] + '"bottom"' + "}" * DEEP["depth"]
        (target / "manifest.json").write_text(text.replace(json.dumps(DEEP_MARK), deep))
    return target


def outcomes(path: Path) -> dict[str, str]:
    """What load, verify and `bundle inspect` did with `path`: "ok" or an error class name.

    Raises:
        AssertionError: any of them raised something other than a BundleError, or hung.
    """
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, run in (
            ("load", lambda: Bundle.load(path)),
            ("verify", lambda: bundle.verify(path)),
            ("inspect", lambda: cli.main(["inspect", str(path)], standalone_mode=False)),
        ):
            try:
                with deadline():
                    run()
                found[name] = "ok"
            except BundleError as exc:
                found[name] = type(exc).__name__
            except Hung as exc:
                raise AssertionError(f"{name} hung on {path}") from exc
            except Exception as exc:
                raise AssertionError(
                    f"{name} raised {type(exc).__name__}, not a BundleError: {exc}"
                ) from exc
    return found


DEEP_MARK = "<nested 100,000 deep>"
DEEP = {"depth": 100_000}


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def _set(path: str, value: Any) -> Callable[[dict, Path], None]:
    def edit(data: dict, directory: Path) -> None:
        *parents, last = path.split("/")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return edit


CASES = {
    "example input is the manifest": (
        _set("example/input", "manifest.json"),
        r"example/input: 'manifest\.json' is not a file listed in 'files'",
    ),
    "example input is the model file": (
        _set("example/input", "model.keras"),
        r"example/input: 'model\.keras' is not a \.parquet or \.npy file",
    ),
    "example input is a folder": (
        _set("example/input", "steps"),
        r"example/input: 'steps/000-pre-columntransformer\.npz' is not a \.parquet or \.npy",
    ),
    "step file is a folder": (
        _set("preprocess/0/file", "steps"),
        r"preprocess/0/file: 'steps' is not a file listed in 'files'",
    ),
    "malformed input schema": (
        _set("input_schema", {"kind": "tabular", "columns": [{"name": 3}]}),
        r"input_schema is not one keras-bundle writes",
    ),
    "unknown model input dtype": (
        _set("model/inputs/0/dtype", "float33"),
        r"model/inputs/0: unknown dtype 'float33'",
    ),
    "structured model input dtype": (
        _set("model/inputs/0/dtype", "f8,i4"),
        r"model/inputs/0: unknown dtype 'f8,i4'",
    ),
    "empty inputs": (
        _set("model/inputs", []),
        r"model/inputs: a model has at least one; the list is empty",
    ),
    "metadata nested 100,000 deep": (
        _set("metadata", DEEP_MARK),
        r"nests deeper than Python's JSON reader goes",
    ),
    "metadata nested 150 deep": (
        _set("metadata", _nest(150)),
        r"nests JSON deeper than 100 levels",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_manifest_is_a_manifest_error(base, case):
    edit, message = CASES[case]
    path = build(base, edit)
    try:
        with pytest.raises(ManifestError, match=message), deadline():
            Bundle.load(path)
        assert outcomes(path) == {
            "load": "ManifestError",
            "verify": "ok",
            "inspect": "ManifestError",
        }
        report = bundle.verify(path)
        assert not report.ok and report.checks[0].name == "manifest"
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def test_a_verified_file_that_does_not_hold_its_part_is_a_bundle_error(base):
    """A native step whose .npz is some other NumPy file (hash recomputed)."""
    import numpy as np

    def edit(data: dict, directory: Path) -> None:
        np.savez(directory / data["preprocess"][0]["file"], unrelated=np.arange(3))

    path = build(base, edit)
    try:
        with pytest.raises(BundleError, match=r"000-pre-columntransformer\.npz is not a readable"):
            Bundle.load(path)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ---------------------------------------------------------------------------- the property
LISTED = [
    "model.keras",
    "requirements.txt",
    "README.md",
    "example/input.parquet",
    "example/scores.npy",
    "steps/000-pre-columntransformer.npz",
    "steps/000-post-labelencoder.npz",
]
PATHS = st.sampled_from([*LISTED, "manifest.json", "steps", "example", "missing.bin", "a/../b"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
DTYPES = st.sampled_from(
    [
        "float32",
        "int64",
        "bool",
        "uint8",
        "str",
        "object",
        "float33",
        "f8,i4",
        "(2,)f4",
        "M8[ns]",
        "",
        "V8",
    ]
)
FIELDS = [
    "model/file",
    "model/inputs",
    "model/outputs",
    "model/inputs/0/dtype",
    "model/inputs/0/shape",
    "model/outputs/0/shape",
    "preprocess/0/file",
    "preprocess/0/serializer",
    "postprocess/0/mode",
    "postprocess/0/file",
    "example/input",
    "example/scores",
    "example/predictions",
    "example/rows",
    "example/rtol",
    "input_schema",
    "input_schema/kind",
    "input_schema/columns",
    "input_schema/columns/0/dtype",
    "input_schema/columns/0/kind",
    "input_schema/columns/0/has_missing",
    "input_schema/columns/0/name",
    "input_schema/columns/4/categories",
    "input_schema/columns/4/dtype",
    "metadata",
    "version",
    "name",
    "format_version",
    "environment",
    "custom_objects",
]


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """One to three (field, new value) edits: typed to pass the schema, or anything."""
    chosen = []
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        leaf = field.rsplit("/", 1)[-1]
        typed = {
            "file": PATHS,
            "input": PATHS,
            "scores": PATHS,
            "predictions": st.none() | PATHS,
            "dtype": DTYPES,
            "shape": st.lists(st.none() | st.integers(-3, 5), max_size=3),
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=5), "shape": st.just([None, 6]), "dtype": DTYPES}
                ),
                max_size=2,
            ),
            "outputs": st.lists(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=5), "shape": st.just([None, 3]), "dtype": DTYPES}
                ),
                max_size=2,
            ),
            "serializer": st.sampled_from(["native", "joblib", "cloudpickle"]),
            "mode": st.sampled_from(["class_ids", "inverse_transform"]),
            "kind": st.sampled_from(
                ["tabular", "array", "multi", "other", "float", "integer", "string", "any"]
            ),
            "has_missing": st.booleans(),
            "name": st.text(max_size=6),
            "categories": st.lists(st.none() | st.integers() | st.text(max_size=4), max_size=4),
            "custom_objects": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.text(min_size=1, max_size=5),
                        "kind": st.sampled_from(["loss", "layer", "function"]),
                        "storage": st.sampled_from(["reference", "value"]),
                        "module": st.sampled_from(["sklearn.metrics", "json", "__main__", "x.y"]),
                        "qualname": st.sampled_from(["mean_absolute_error", "dumps", "A.b"]),
                        "file": st.none() | PATHS,
                        "executes_code": st.booleans(),
                        "needed_for": st.sampled_from(["predict", "compile"]),
                    }
                ),
                max_size=2,
            ),
            "metadata": st.integers(1, 900).map(_nest)
            | st.just(DEEP_MARK)
            | st.dictionaries(st.text(), JSON),
        }.get(leaf)
        # Mostly values of the field's type, to get past the JSON Schema into the readers.
        schema_typed = typed is not None and draw(st.sampled_from([True, True, True, False]))
        value = draw(typed if schema_typed else JSON)
        chosen.append((field, value))
    return chosen


def _apply(changes: list[tuple[str, Any]]) -> Callable[[dict, Path], None]:
    def edit(data: dict, directory: Path) -> None:
        for field, value in changes:
            with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
                _set(field, value)(data, directory)

    return edit


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(changes=edits())
def test_only_bundle_errors_come_out_of_malformed_manifests(base, changes):
    path = build(base, _apply(changes))
    try:
        outcomes(path)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
