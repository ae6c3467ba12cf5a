"""Integrity: every byte on disk is the one the manifest recorded, checked before unpickling."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from bundle import Bundle, IntegrityError, UnsafeLoadError
from bundle.format.integrity import CHUNK_SIZE, file_table, hash_file, list_files, verify_files
from bundle.format.trust import check_trust, executes_code


class UnpickleMarker:
    """A preprocess step that leaves a file behind when it is unpickled.

    It lives in this test module (not an installed distribution), so the bundle stores it
    with cloudpickle, by value; unpickling it runs __setstate__, which writes the marker.
    """

    def __init__(self, marker: str):
        self.marker = marker

    def transform(self, x):
        return x

    def __setstate__(self, state):
        self.__dict__.update(state)
        Path(self.marker).write_text("unpickled")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())["files"]


@pytest.fixture(scope="module")
def marker_bundle(tmp_path_factory, image_parts):
    """A saved bundle with a pickled step, and the marker file its unpickling writes."""
    directory = tmp_path_factory.mktemp("marker")
    marker = directory / "unpickled.txt"
    path = Bundle(
        image_parts, preprocess=UnpickleMarker(str(marker)), name="marked", version="1"
    ).save(directory / "root")
    return path, marker


# ---------------------------------------------------------------------------- the tampering
def test_flipped_byte_is_named_with_both_sizes_and_hashes(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    model = copy / "model.keras"
    recorded = _recorded(copy)["model.keras"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    size, now = recorded["size"], _sha(model)
    expected = (
        rf"1 of \d+ files in bundle 'churn' 1\.0\.0 do not match the manifest:\n"
        rf"- model\.keras: {size:,} bytes on disk, {size:,} recorded; "
        rf"sha256 {now[:8]}\.\.\. vs {recorded['sha256'][:8]}\.\.\."
    )
    with pytest.raises(IntegrityError, match=expected) as e:
        Bundle.load(copy)
    assert (e.value.mismatched, e.value.missing, e.value.unexpected) == (["model.keras"], [], [])
    message = str(e.value)
    assert "shorter" not in message  # same size: no interrupted-copy diagnosis
    assert "Restore it from the original release" in message


def test_truncated_file_is_diagnosed_as_an_interrupted_copy(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    model = copy / "model.keras"
    size = model.stat().st_size
    with open(model, "r+b") as handle:
        handle.truncate(size // 3)
    expected = (
        rf"- model\.keras: {size // 3:,} bytes on disk, {size:,} recorded;(.|\n)*"
        r"The files are shorter than recorded: the copy was probably interrupted"
    )
    with pytest.raises(IntegrityError, match=expected) as e:
        Bundle.load(copy)
    assert e.value.mismatched == ["model.keras"]


def test_longer_file_is_not_diagnosed_as_interrupted(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    with open(copy / "requirements.txt", "a") as handle:
        handle.write("evil-package==6.6.6\n")
    with pytest.raises(IntegrityError, match=r"- requirements\.txt: ") as e:
        Bundle.load(copy)
    assert "shorter" not in str(e.value)


def test_one_truncated_one_altered_is_not_diagnosed_as_interrupted(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    with open(copy / "model.keras", "r+b") as handle:
        handle.truncate(10)
    (copy / "README.md").write_text("# replaced\n" * 500)
    with pytest.raises(IntegrityError, match=r"2 of \d+ files") as e:
        Bundle.load(copy)
    assert e.value.mismatched == ["README.md", "model.keras"]
    assert "shorter" not in str(e.value)


def test_missing_file_is_named(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    step = _manifest_step_file(copy)
    (copy / step).unlink()
    expected = (
        rf"1 file\(s\) listed in the manifest of bundle 'churn' 1\.0\.0 are missing:\n"
        rf"- {re.escape(step)}\n"
    )
    with pytest.raises(IntegrityError, match=expected) as e:
        Bundle.load(copy)
    assert (e.value.mismatched, e.value.missing, e.value.unexpected) == ([], [step], [])


def test_unlisted_file_is_named_as_unexpected(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    (copy / "steps" / "999-extra.joblib").write_bytes(b"\x80\x05N.")
    (copy / "notes.txt").write_text("hello")
    expected = (
        r"2 file\(s\) in bundle 'churn' 1\.0\.0 are not listed in its manifest:\n"
        r"- notes\.txt\n- steps/999-extra\.joblib\n"
    )
    with pytest.raises(IntegrityError, match=expected) as e:
        Bundle.load(copy)
    assert e.value.unexpected == ["notes.txt", "steps/999-extra.joblib"]
    assert e.value.missing == [] and e.value.mismatched == []


def test_every_problem_is_reported_at_once(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    (copy / "requirements.txt").unlink()
    (copy / "example" / "stray.npy").write_bytes(b"x")
    (copy / "README.md").write_text("edited")
    with pytest.raises(IntegrityError) as e:
        Bundle.load(copy)
    assert e.value.mismatched == ["README.md"]
    assert e.value.missing == ["requirements.txt"]
    assert e.value.unexpected == ["example/stray.npy"]
    message = str(e.value)
    for fragment in ("do not match", "are missing", "are not listed", "README.md"):
        assert fragment in message


def test_renamed_version_directory_content_still_verifies(tabular_bundle, tmp_path):
    """Hashes are of contents, not of locations: a moved bundle stays valid."""
    import shutil

    moved = tmp_path / "elsewhere" / "1.0.0"
    shutil.copytree(tabular_bundle[0], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    verify_files(moved, manifest["files"], label="moved")


def _manifest_step_file(path: Path) -> str:
    return json.loads((path / "manifest.json").read_text())["preprocess"][0]["file"]


# ---------------------------------------------------------------------------- nothing unpickled
def test_intact_trusted_bundle_unpickles_the_step(marker_bundle, bundle_copy):
    """Control for the tests below: loading this bundle does write the marker."""
    path, marker = marker_bundle
    copy = bundle_copy(path)
    marker.unlink(missing_ok=True)
    loaded = Bundle.load(copy, trusted=True)
    assert marker.read_text() == "unpickled"
    assert type(loaded.preprocess[0]).__name__ == "UnpickleMarker"
    marker.unlink()


@pytest.mark.parametrize("tamper", ["flip", "truncate", "delete", "add"])
def test_integrity_is_checked_before_anything_is_unpickled(marker_bundle, bundle_copy, tamper):
    path, marker = marker_bundle
    copy = bundle_copy(path)
    marker.unlink(missing_ok=True)
    step = copy / _manifest_step_file(copy)
    assert step.suffix == ".pkl"
    if tamper == "flip":
        data = bytearray(step.read_bytes())
        data[-5] ^= 0x01
        step.write_bytes(bytes(data))
    elif tamper == "truncate":
        step.write_bytes(step.read_bytes()[:-20])
    elif tamper == "delete":
        (copy / "model.keras").unlink()
    else:
        (copy / "custom_objects").mkdir()
        (copy / "custom_objects" / "loss.pkl").write_bytes(step.read_bytes())
    with pytest.raises(IntegrityError):
        Bundle.load(copy, trusted=True)
    assert not marker.exists(), "a pickle was loaded before the integrity check"


def test_trust_is_checked_before_anything_is_unpickled(marker_bundle, bundle_copy):
    path, marker = marker_bundle
    copy = bundle_copy(path)
    marker.unlink(missing_ok=True)
    expected = (
        r"Refusing to load bundle 'marked' 1: 1 part\(s\) are pickles, and unpickling runs "
        r"code stored in the bundle:\n"
        r"- steps/000-pre-unpicklemarker\.pkl: a cloudpickle pickle of "
        r"test_integrity\.UnpickleMarker"
    )
    with pytest.raises(UnsafeLoadError, match=expected) as e:
        Bundle.load(copy)
    assert "Bundle.load(path, trusted=True)" in str(e.value)
    assert [(f, s) for f, s, _ in e.value.parts] == [
        ("steps/000-pre-unpicklemarker.pkl", "cloudpickle")
    ]
    assert not marker.exists()


def test_a_pickle_flagged_safe_in_the_manifest_is_still_refused(marker_bundle, bundle_copy):
    """The manifest's executes_code flag is the bundle author's claim, not a fact."""
    path, marker = marker_bundle
    copy = bundle_copy(path)
    marker.unlink(missing_ok=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["preprocess"][0]["executes_code"] = False  # serializer stays "cloudpickle"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        UnsafeLoadError, match=r"- steps/000-pre-unpicklemarker\.pkl: a cloudpickle"
    ):
        Bundle.load(copy)
    assert not marker.exists()


REF = {"module": "mypkg.losses", "qualname": "FocalLoss"}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"serializer": "native", "executes_code": False}, False),
        ({"serializer": "keras", "executes_code": False}, False),
        ({"serializer": "keras", "executes_code": True}, True),
        ({"serializer": "joblib", "executes_code": False}, True),
        ({"serializer": "cloudpickle", "executes_code": False}, True),
        ({"storage": "reference", "serializer": "reference", "executes_code": False, **REF}, False),
        ({"storage": "reference", "executes_code": False, **REF}, False),
        # A by-reference record steering the import to local or standard-library code.
        ({"storage": "reference", "module": "__main__", "qualname": "loss"}, True),
        ({"storage": "reference", "module": "pkg.losses", "qualname": "f.<locals>.g"}, True),
        ({"storage": "reference", "module": "antigravity", "qualname": "geohash"}, True),
        ({"storage": "reference", "serializer": "reference"}, True),
        ({"storage": "value", "serializer": "reference", "executes_code": False}, True),
        ({"storage": "value", "executes_code": False}, True),
        ({"executes_code": False}, True),
    ],
)
def test_executes_code_is_decided_by_the_serializer(record, expected):
    assert executes_code(record) is expected


def test_refusal_of_a_by_value_custom_object_without_serializer():
    part = {
        "file": "custom_objects/loss.pkl",
        "storage": "value",
        "executes_code": False,
        "module": "__main__",
        "qualname": "loss",
    }
    expected = r"- custom_objects/loss\.pkl: a pickle of __main__\.loss\n"
    with pytest.raises(UnsafeLoadError, match=expected):
        check_trust([part], trusted=False, label="b")


# ---------------------------------------------------------------------------- the functions
def test_hash_file_reads_in_chunks_and_matches_hashlib(tmp_path):
    big = tmp_path / "big.bin"
    data = np.random.default_rng(0).bytes(CHUNK_SIZE * 2 + 123)
    big.write_bytes(data)
    assert hash_file(big) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert hash_file(empty) == hashlib.sha256(b"").hexdigest()


def test_file_table_lists_every_file_but_the_top_level_manifest(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "b.txt").write_text("bee")
    assert list_files(tmp_path) == ["a/manifest.json", "b.txt"]
    table = file_table(tmp_path)
    assert table["b.txt"] == {"sha256": hashlib.sha256(b"bee").hexdigest(), "size": 3}
    assert set(table) == {"a/manifest.json", "b.txt"}
    verify_files(tmp_path, table, label="x")


def test_many_mismatches_are_capped_at_five(tmp_path):
    for i in range(7):
        (tmp_path / f"f{i}.txt").write_text("original")
    table = file_table(tmp_path)
    for i in range(7):
        (tmp_path / f"f{i}.txt").write_text("changed!")
    with pytest.raises(IntegrityError, match=r"7 of 7 files in demo do not match") as e:
        verify_files(tmp_path, table, label="demo")
    assert "... (2 more)" in str(e.value)
    assert e.value.mismatched == [f"f{i}.txt" for i in range(7)]


def test_check_trust_passes_safe_parts_and_trusted_callers():
    safe = [{"file": "steps/0.npz", "serializer": "native", "executes_code": False}]
    check_trust(safe, trusted=False, label="b")
    unsafe = [{"file": "x.pkl", "serializer": "cloudpickle", "executes_code": True}]
    check_trust(unsafe, trusted=True, label="b")


def test_check_trust_hides_plumbing_and_caps_imports():
    imports = ["builtins.getattr", "numpy.core.multiarray._reconstruct", "cloudpickle.x"]
    imports += [f"mypkg.f{i}" for i in range(10)]
    part = {
        "file": "steps/001-pre-functiontransformer.joblib",
        "serializer": "joblib",
        "executes_code": True,
        "class": "sklearn.preprocessing.FunctionTransformer",
        "imports": sorted(imports),
    }
    with pytest.raises(UnsafeLoadError) as e:
        check_trust([part], trusted=False, label="bundle 'p' 2")
    message = str(e.value)
    assert (
        "- steps/001-pre-functiontransformer.joblib: a joblib pickle of "
        "sklearn.preprocessing.FunctionTransformer (references mypkg.f0, mypkg.f1,"
    ) in message
    assert "... (2 more))" in message
    assert "builtins" not in message and "numpy" not in message
    assert e.value.parts[0][2] == sorted(imports)  # the attribute keeps everything


def test_files_are_listed_as_posix_paths(tmp_path):
    nested = tmp_path / "steps" / "deep"
    nested.mkdir(parents=True)
    (nested / "x.npz").write_bytes(b"1")
    assert list_files(tmp_path) == ["steps/deep/x.npz"]
    assert os.sep not in "".join(list_files(tmp_path)).replace("/", "")
