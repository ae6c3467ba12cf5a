"""Loads are snapshots: what was hashed is what is used, and special files are refused unread.

Hostile stores first (a FIFO or a link to /dev/zero in place of a listed file: before, a
load or `bundle verify` blocked forever), then the snapshot itself, then real processes: a
loader and a writer replacing the version with ``overwrite=True`` at the worst moment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from bundle import Bundle, BundleNotFoundError, IntegrityError, ManifestError, verify
from bundle.format.manifest import read_manifest
from bundle.format.snapshot import open_snapshot, read_regular

# A hang is the failure mode under test: fail fast instead.
HANG = pytest.mark.timeout(120)


def _cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "bundle.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


# ---------------------------------------------------------------------------- special files
@HANG
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "link to a real file"])
def test_a_listed_file_replaced_by_a_special_file_is_refused_unopened(
    tabular_bundle, bundle_copy, kind
):
    copy = bundle_copy(tabular_bundle[0])
    target = copy / "model.keras"
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link to /dev/zero":
        target.symlink_to("/dev/zero")
    else:
        (copy / "elsewhere.keras").write_bytes(b"")  # not listed either
        target.symlink_to(copy / "elsewhere.keras")
    described = "a FIFO" if kind == "fifo" else "a symbolic link"
    expected = (
        r"1 entr\(ies\) in bundle 'churn' 1\.0\.0 are not regular files, refused before "
        rf"opening them:\n- model\.keras: {described}"
    )
    with pytest.raises(IntegrityError, match=expected) as caught:
        Bundle.load(copy)
    assert "model.keras" in caught.value.mismatched
    report = verify(copy, load=False)
    assert not report.ok and f"model.keras: {described}" in report.checks[-1].detail
    result = _cli("verify", copy, "--no-load")
    assert result.returncode == 1 and f"model.keras: {described}" in result.stdout
    result = _cli("inspect", copy)  # reads the model's config: never blocks either
    assert "Traceback" not in result.stderr and result.returncode in (0, 1), result.stderr


@HANG
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_manifest_replaced_by_a_special_file_is_refused_unopened(
    tabular_bundle, bundle_copy, kind
):
    copy = bundle_copy(tabular_bundle[0])
    manifest = copy / "manifest.json"
    manifest.unlink()
    if kind == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.symlink_to("/dev/zero")
    described = "a FIFO" if kind == "fifo" else "a symbolic link"
    expected = rf"manifest\.json is {described}, not a regular manifest: refused before opening"
    with pytest.raises(ManifestError, match=expected):
        read_manifest(copy)
    # Without a regular manifest the directory is no published version, and says so.
    with pytest.raises(BundleNotFoundError, match=r"holds no published bundle version"):
        Bundle.load(copy)
    for command in (("inspect", copy), ("verify", copy, "--no-load"), ("list", copy.parent)):
        result = _cli(*command)
        assert "Traceback" not in result.stderr, result.stderr
        if command[0] != "list":
            assert result.returncode == 1 and result.stderr.startswith("Error: "), result


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text, re.MULTILINE) is not None


@HANG
def test_an_unlisted_fifo_anywhere_is_refused(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    os.mkfifo(copy / "steps" / "pipe")
    with pytest.raises(IntegrityError, match=r"- steps/pipe: a FIFO"):
        Bundle.load(copy)


def test_read_regular_refuses_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "real").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "real") == b"x" * 10
    with pytest.raises(ManifestError, match=r"is 10 bytes, more than the 4 a file may be"):
        read_regular(tmp_path / "real", limit=4)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ManifestError, match=r"dir is a directory, not a regular file"):
        read_regular(tmp_path / "dir")
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent")


# ---------------------------------------------------------------------------- the snapshot
def test_a_snapshot_keeps_the_verified_files_when_the_version_is_replaced(tmp_path, tiny_model):
    root = tmp_path / "root"
    Bundle(tiny_model, name="a", version="1", metadata={"v": "A"}).save(root)
    first = (root / "1" / "model.keras").read_bytes()
    with open_snapshot(root / "1") as snapshot:
        assert snapshot.manifest.metadata == {"v": "A"}
        # Replaced the way save(overwrite=True) does: renamed away, then deleted.
        Bundle(tiny_model, name="b", version="1", metadata={"v": "B"}).save(root, overwrite=True)
        assert json.loads((root / "1" / "manifest.json").read_text())["metadata"] == {"v": "B"}
        assert (snapshot.path / "model.keras").read_bytes() == first
        assert sorted(
            p.relative_to(snapshot.path).as_posix()
            for p in snapshot.path.rglob("*")
            if not p.is_dir()
        ) == sorted(snapshot.manifest.files)
    assert not snapshot.path.exists()  # the private view is gone with it


def test_a_file_written_to_while_in_use_is_named(tmp_path, tiny_model):
    path = Bundle(tiny_model, name="a").save(tmp_path / "root")
    snapshot = open_snapshot(path)
    with open(path / "requirements.txt", "a") as handle:  # in place: never done by a save
        handle.write("evil==1\n")
    with pytest.raises(IntegrityError, match=r"1 file\(s\) of bundle 'a' 1 were written to while"):
        snapshot.close()


def test_a_snapshot_without_proc_copies_what_it_hashed(tmp_path, tiny_model, monkeypatch):
    """Where /proc/self/fd does not exist, the hashed bytes are copied as they are read."""
    import bundle.format.snapshot as module

    monkeypatch.setattr(module, "_PROC_FD", tmp_path / "no-proc")
    path = Bundle(tiny_model, name="a").save(tmp_path / "root")
    with open_snapshot(path) as snapshot:
        model = snapshot.path / "model.keras"
        assert not model.is_symlink()
        assert model.read_bytes() == (path / "model.keras").read_bytes()
    loaded = Bundle.load(path)
    np.testing.assert_allclose(
        loaded.predict([[1.0, 2.0]]),
        tiny_model.predict(np.array([[1.0, 2.0]], "float32"), verbose=0),
        atol=1e-6,
    )


# ---------------------------------------------------------------------------- real processes
# Variant A predicts 1.0 everywhere, variant B 2.0: a loader that returns manifest A
# (metadata) with model B (predictions) mixed two versions.
SAVE_VARIANT = textwrap.dedent("""
    import keras
    import numpy as np
    from bundle import Bundle

    def variant(value):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
            1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(value))])
        tag = "A" if value == 1.0 else "B"
        return Bundle(model, input_example=np.zeros((1, 2), "float32"), name="mix", version="1",
                      metadata={"variant": tag, "expects": value})
""")

WRITER = SAVE_VARIANT + textwrap.dedent("""
    import pathlib, sys, time
    root, work, rounds = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
    bundles = [variant(1.0), variant(2.0)]
    (work / "writer-ready").touch()
    if rounds == 0:  # on cue: one overwrite when the loader says go
        while not (work / "go").exists():
            time.sleep(0.001)
        bundles[1].save(root, overwrite=True)
        (work / "done").touch()
    else:  # free running
        for i in range(rounds):
            bundles[(i + 1) % 2].save(root, overwrite=True)
        (work / "done").touch()
""")

LOADER = textwrap.dedent("""
    import json, pathlib, sys, time, warnings
    import numpy as np
    from bundle import Bundle, BundleError

    root, work, mode = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    warnings.simplefilter("ignore")
    opens = []

    def pause_after_verification(event, args):
        # Open number 2 of a model.keras is the first after the hashes were checked: the
        # worst moment for the version to be replaced.
        if event == "open" and isinstance(args[0], str) and args[0].endswith("model.keras"):
            opens.append(args[0])
            if len(opens) == 2:
                (work / "go").touch()
                while not (work / "done").exists():
                    time.sleep(0.001)

    if mode == "cue":
        while not (work / "writer-ready").exists():
            time.sleep(0.01)
        sys.addaudithook(pause_after_verification)
    results = []
    deadline = time.monotonic() + 60
    while True:
        try:
            loaded = Bundle.load(root)
            got = float(np.asarray(loaded.predict([[3.0, 4.0]])).ravel()[0])
            results.append([loaded.metadata["variant"], loaded.metadata["expects"], got])
        except BundleError as exc:
            results.append(["error", type(exc).__name__, str(exc).splitlines()[0]])
        if mode == "cue" or (work / "done").exists() or time.monotonic() > deadline:
            break
    print(json.dumps(results))
""")


def _start(code: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


@pytest.fixture
def variant_root(tmp_path):
    """A root whose version 1 is variant A, saved by a real process."""
    root = tmp_path / "root"
    script = SAVE_VARIANT + f"\nvariant(1.0).save({str(root)!r})\n"
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return root


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_a_load_overlapping_an_overwrite_at_the_worst_moment_sees_one_version(
    variant_root, tmp_path
):
    """The writer replaces version 1 right after the loader verified it (an audit hook
    pauses the loader there): the loader still uses what it verified, all of variant A."""
    work = tmp_path / "work"
    work.mkdir()
    writer = _start(WRITER, variant_root, work, 0)
    loader = _start(LOADER, variant_root, work, "cue")
    [result] = json.loads(_finish(loader).strip().splitlines()[-1])
    _finish(writer)
    assert (work / "go").exists() and (work / "done").exists(), "the overwrite did not happen"
    assert result == ["A", 1.0, 1.0]
    assert json.loads((variant_root / "1" / "manifest.json").read_text())["metadata"] == {
        "variant": "B",
        "expects": 2.0,
    }


@pytest.mark.slow
def test_loads_racing_a_writer_never_mix_two_versions(variant_root, tmp_path):
    """Free running: two loaders load and predict in a loop while a writer overwrites the
    version back and forth. Every load is all of one version, or a clear error."""
    work = tmp_path / "work"
    work.mkdir()
    loaders = [_start(LOADER, variant_root, work, "loop") for _ in range(2)]
    time.sleep(8)  # let the loaders import TensorFlow and start loading
    writer = _start(WRITER, variant_root, work, 12)
    _finish(writer)
    results = [row for loader in loaders for row in json.loads(_finish(loader).splitlines()[-1])]
    loads = [row for row in results if row[0] != "error"]
    assert loads, results
    mixed = [row for row in loads if row[1] != row[2]]
    assert not mixed, f"manifest of one version, model of the other: {mixed}"
    for row in results:
        if row[0] == "error":  # the instant between moving the old version and the new in
            assert row[1] in ("BundleNotFoundError", "IntegrityError"), row
    assert {row[0] for row in loads} <= {"A", "B"}


# ---------------------------------------------------------------------------- version names
def test_a_version_directory_holding_another_versions_manifest(tmp_path, tiny_model):
    import bundle

    root = tmp_path / "root"
    Bundle(tiny_model, name="churn", version="2").save(root)
    shutil.copytree(root / "2", root / "3")  # copied by hand: 3 holds version 2
    expected = (
        rf"{root / '3'} is published as version '3', but its manifest is that of bundle "
        r"'churn' 2: the directory was copied or renamed by hand, or its manifest replaced\."
    )
    for how in ({}, {"version": "3"}):
        with pytest.raises(IntegrityError, match=expected):
            Bundle.load(root, **how)
    bundle.tag(root, "prod", "3")
    with pytest.raises(IntegrityError, match=expected):
        Bundle.load(f"{root}@prod")
    with pytest.warns(bundle.VersionMismatchWarning, match=r"not of version '3'") as caught:
        loaded = Bundle.load(root / "3")  # passed directly: a renamed copy loads
    assert loaded.version == "2" and caught[0].message.version == "2"
    assert Bundle.load(root, version="2").version == "2"  # the right one, silently
