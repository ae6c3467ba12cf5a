"""Versioned roots: numbering, resolution, immutability, atomic publish, crashes and races."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bundle import Bundle, BundleNotFoundError, VersionExistsError
from bundle.format.integrity import file_table
from bundle.storage.local import (
    check_version_name,
    list_versions,
    next_version,
    publish,
    resolve,
    staging,
    version_key,
)


@pytest.fixture(scope="module")
def semver_root(tmp_path_factory, tiny_model):
    """A root with versions saved out of order: 1.10.0, 1.2.0, 1.9.0."""
    root = tmp_path_factory.mktemp("semver") / "model"
    for version in ("1.10.0", "1.2.0", "1.9.0"):
        Bundle(tiny_model, name="m", version=version, metadata={"v": version}).save(root)
    return root


def _save(model, root, *, overwrite: bool = False, **kwargs) -> Path:
    return Bundle(model, name="m", **kwargs).save(root, overwrite=overwrite)


def _visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def _hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def _snapshot(path: Path) -> dict:
    manifest = (path / "manifest.json").read_bytes()
    return {"files": file_table(path), "manifest": manifest}


# ---------------------------------------------------------------------------- numbering
def test_save_without_version_numbers_from_one(tiny_model, tmp_path):
    root = tmp_path / "root"
    first = _save(tiny_model, root)
    second = _save(tiny_model, root)
    assert (first, second) == (root / "1", root / "2")
    assert json.loads((second / "manifest.json").read_text())["version"] == "2"
    assert Bundle.load(root).version == "2"
    assert _visible(root) == ["1", "2"] and _hidden(root) == []


def test_bundle_object_reports_the_version_it_was_saved_as(tiny_model, tmp_path):
    saved = Bundle(tiny_model, name="m")
    path = saved.save(tmp_path)
    assert saved.path == path and saved.manifest.version == "1"
    assert "'m' 1:" in repr(saved)


def test_numbering_continues_after_the_highest_integer(tiny_model, tmp_path):
    for version in ("9", "10", "2.0.0"):
        _save(tiny_model, tmp_path, version=version)
    assert _save(tiny_model, tmp_path).name == "11"


def test_numbering_skips_a_directory_that_is_not_a_version(tiny_model, tmp_path):
    """A folder named 1 without a manifest (a copy in progress) blocks the name 1."""
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.keras").write_bytes(b"partial")
    path = _save(tiny_model, tmp_path)
    assert path.name == "2"
    assert (tmp_path / "1" / "model.keras").read_bytes() == b"partial"
    assert list_versions(tmp_path) == ["2"]


def test_next_version_counts_every_integer_name(tmp_path):
    assert next_version(tmp_path / "absent") == "1"
    (tmp_path / "4").mkdir()
    (tmp_path / "007").write_text("a file")
    (tmp_path / "1.5").mkdir()
    (tmp_path / "²").mkdir()  # a digit to str.isdigit(), not to int()
    assert next_version(tmp_path) == "8"


# ---------------------------------------------------------------------------- resolution
def test_highest_version_is_semver_aware(semver_root):
    assert list_versions(semver_root) == ["1.2.0", "1.9.0", "1.10.0"]
    loaded = Bundle.load(semver_root)
    assert loaded.version == "1.10.0" and loaded.path == semver_root / "1.10.0"
    assert loaded.metadata["v"] == "1.10.0"


def test_integers_sort_numerically(tiny_model, tmp_path):
    for version in ("10", "9", "2"):
        _save(tiny_model, tmp_path, version=version)
    assert list_versions(tmp_path) == ["2", "9", "10"]
    assert Bundle.load(tmp_path).version == "10"


@pytest.mark.parametrize(
    ("versions", "highest"),
    [
        (["1.0.0", "1.0.0-rc.1"], "1.0.0"),
        (["2.0.0rc1", "1.99.0"], "2.0.0rc1"),
        (["2", "1.10.0"], "2"),
        (["1.0.0+build.7", "0.9"], "1.0.0+build.7"),
        (["nightly", "0.1.0"], "0.1.0"),
        (["beta", "alpha"], "beta"),
    ],
)
def test_version_key_orders_versions(versions, highest):
    assert max(versions, key=version_key) == highest


def test_load_a_given_version_of_a_root(semver_root):
    assert Bundle.load(semver_root, version="1.9.0").version == "1.9.0"
    assert Bundle.load(semver_root / "1.9.0").version == "1.9.0"
    assert Bundle.load(semver_root / "1.9.0", version="1.9.0").version == "1.9.0"
    assert resolve(semver_root, "1.2.0") == semver_root / "1.2.0"


def test_unknown_version_lists_the_available_ones(semver_root):
    expected = (
        rf"No version or alias '2\.0\.0' under {semver_root}\.\nVersions there:\n"
        r"- 1\.10\.0\n- 1\.9\.0\n- 1\.2\.0$"
    )
    with pytest.raises(BundleNotFoundError, match=expected) as e:
        Bundle.load(semver_root, version="2.0.0")
    assert e.value.available == ["1.2.0", "1.9.0", "1.10.0"]
    assert e.value.location == str(semver_root)


def test_store_resolve_lists_the_available_ones(semver_root):
    expected = (
        rf"No version '2\.0\.0' under {semver_root}\. Versions there:\n"
        r"- 1\.10\.0\n- 1\.9\.0\n- 1\.2\.0$"
    )
    with pytest.raises(BundleNotFoundError, match=expected) as e:
        resolve(semver_root, "2.0.0")
    assert e.value.available == ["1.2.0", "1.9.0", "1.10.0"]


def test_version_directory_with_another_version_is_refused(semver_root):
    with pytest.raises(
        BundleNotFoundError, match=r"is the bundle version '1\.9\.0', not '1\.2\.0'"
    ):
        Bundle.load(semver_root / "1.9.0", version="1.2.0")


def test_version_that_escapes_the_root_is_not_found(semver_root):
    with pytest.raises(BundleNotFoundError, match=r"No version or alias '\.\./model/1\.9\.0'"):
        Bundle.load(semver_root, version="../model/1.9.0")
    with pytest.raises(BundleNotFoundError, match=r"No version '\.\./model/1\.9\.0' under"):
        resolve(semver_root, "../model/1.9.0")


NOTHING_PUBLISHED = (
    r" holds no published bundle version: expected a version directory "
    r"\(with manifest\.json\), a root of them, or an archive\."
)


def test_empty_root_is_not_a_bundle(tmp_path):
    with pytest.raises(
        BundleNotFoundError, match=re.escape(str(tmp_path)) + NOTHING_PUBLISHED
    ) as e:
        Bundle.load(tmp_path)
    assert e.value.available == []
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(BundleNotFoundError, match=r"holds no published bundle version: expected"):
        resolve(tmp_path)


def test_nonexistent_root_is_not_a_bundle(tmp_path):
    with pytest.raises(BundleNotFoundError, match=r"/nowhere does not exist: expected a bundle"):
        Bundle.load(tmp_path / "nowhere")
    with pytest.raises(BundleNotFoundError, match=r"No version or alias '1' under .*nowhere\.$"):
        Bundle.load(tmp_path / "nowhere", version="1")
    with pytest.raises(BundleNotFoundError, match=r"/nowhere does not exist: expected a bundle"):
        resolve(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()  # looking did not create it


def test_directories_without_manifest_and_files_are_ignored(semver_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(semver_root / "1.2.0", root / "1.2.0")
    (root / "5.0.0").mkdir()  # no manifest: not a version
    (root / "6.0.0").write_text("a file, not a directory")
    assert list_versions(root) == ["1.2.0"]
    assert Bundle.load(root).version == "1.2.0"


def test_staging_directories_are_invisible(semver_root, tmp_path):
    root = tmp_path / "root"
    # a complete-looking version, manifest and all, in a staging directory
    shutil.copytree(semver_root / "1.10.0", root / ".staging-0123abcd")
    with pytest.raises(BundleNotFoundError, match=r"holds no published bundle version"):
        Bundle.load(root)
    shutil.copytree(semver_root / "1.2.0", root / "1.2.0")
    shutil.copytree(semver_root / "1.9.0", root / ".trash-0123abcd")
    assert list_versions(root) == ["1.2.0"]
    assert Bundle.load(root).version == "1.2.0"


# ---------------------------------------------------------------------------- immutability
def test_existing_version_is_refused_and_left_unchanged(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path, version="1.0.0", metadata={"run": 1})
    before = _snapshot(path)
    expected = (
        rf"^Version '1\.0\.0' already exists under {tmp_path}; published versions are "
        r"immutable\.\nSave under a new version, or pass overwrite=True to replace it\.$"
    )
    with pytest.raises(VersionExistsError, match=expected) as e:
        _save(tiny_model, tmp_path, version="1.0.0", metadata={"run": 2})
    assert (e.value.version, e.value.path) == ("1.0.0", str(path))
    assert _snapshot(path) == before
    assert _hidden(tmp_path) == [], "the failed save left its staging directory behind"
    assert Bundle.load(tmp_path).metadata["run"] == 1


def test_overwrite_replaces_the_version(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path, version="1.0.0", metadata={"run": 1})
    assert _save(tiny_model, tmp_path, version="1.0.0", metadata={"run": 2}, overwrite=True) == (
        path
    )
    assert Bundle.load(tmp_path).metadata["run"] == 2
    assert _visible(tmp_path) == ["1.0.0"] and _hidden(tmp_path) == []


def test_overwrite_of_a_new_version_just_saves(tiny_model, tmp_path):
    assert _save(tiny_model, tmp_path, version="3", overwrite=True).name == "3"


@pytest.mark.parametrize(
    "version", ["../x", "a/b", "", ".", "..", ".hidden", "-rc", "v 1", "1\\2", "x" * 129, "é"]
)
def test_invalid_version_names_are_refused(tiny_model, version):
    expected = rf"^Version {re.escape(repr(version))} is not a valid version name: use letters"
    with pytest.raises(ValueError, match=expected):
        Bundle(tiny_model, version=version)
    with pytest.raises(ValueError, match=r"e\.g\. '1\.2\.0' or '7'"):
        check_version_name(version)


@pytest.mark.parametrize("version", ["1", "1.2.0", "2024-05-01", "v3", "1.0.0+cpu", "x" * 128])
def test_valid_version_names(version):
    assert check_version_name(version) == version


def test_integer_versions_are_accepted_as_ints(tiny_model, tmp_path):
    assert Bundle(tiny_model, name="m", version=7).save(tmp_path).name == "7"  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- publish
def _finalizer(calls: list[str]):
    def finalize(directory: Path, version: str) -> None:
        calls.append(version)
        (directory / "manifest.json").write_text(json.dumps({"version": version}))

    return finalize


def _publish_other(root: Path, version: str) -> None:
    """What another process does: publish `version` under `root`."""
    with staging(root) as other:
        (other / "manifest.json").write_text(json.dumps({"version": version, "by": "other"}))
        os.rename(other, root / version)


def test_publish_retries_the_next_number_when_another_process_wins(tmp_path):
    with staging(tmp_path) as folder:
        _publish_retrying(tmp_path, folder)


def _publish_retrying(tmp_path: Path, folder: Path) -> None:
    calls: list[str] = []
    inner = _finalizer(calls)

    def finalize(directory: Path, version: str) -> None:
        inner(directory, version)
        if len(calls) == 1:  # the other process publishes "1" between finalize and rename
            _publish_other(tmp_path, version)

    path = publish(folder, tmp_path, None, finalize=finalize)
    assert path == tmp_path / "2"
    assert calls == ["1", "2"]
    assert json.loads((tmp_path / "1" / "manifest.json").read_text())["by"] == "other"
    # the manifest was rewritten for the number it was finally published under
    assert json.loads((path / "manifest.json").read_text()) == {"version": "2"}
    assert _hidden(tmp_path) == []


def test_publish_with_a_version_another_process_took_raises(tmp_path):
    calls: list[str] = []
    inner = _finalizer(calls)

    def finalize(directory: Path, version: str) -> None:
        inner(directory, version)
        _publish_other(tmp_path, version)

    with staging(tmp_path) as folder:
        with pytest.raises(VersionExistsError, match=r"Version '5' already exists"):
            publish(folder, tmp_path, "5", finalize=finalize)
        assert json.loads((tmp_path / "5" / "manifest.json").read_text())["by"] == "other"
        assert folder.is_dir()  # publish leaves it to its owner...
    assert not folder.exists()  # ... which removes it


def test_failed_overwrite_puts_the_old_version_back(tmp_path):
    _publish_other(tmp_path, "1.0.0")
    before = (tmp_path / "1.0.0" / "manifest.json").read_text()

    def finalize(directory: Path, version: str) -> None:
        shutil.rmtree(directory)  # the swap that follows fails with FileNotFoundError

    with staging(tmp_path) as folder, pytest.raises(FileNotFoundError):
        publish(folder, tmp_path, "1.0.0", finalize=finalize, overwrite=True)
    assert (tmp_path / "1.0.0" / "manifest.json").read_text() == before
    assert _hidden(tmp_path) == []


# ---------------------------------------------------------------------------- real processes
def _child(code: str, *args: str) -> subprocess.Popen:
    """Start `code` in a fresh interpreter (none of the test's imports)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"child exited with {process.returncode}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


CRASHING_SAVE = """
    import pathlib, sys, time
    import keras
    from bundle import Bundle

    marker, root = sys.argv[1:]

    class SlowStep:
        def transform(self, x):
            return x

        def __getstate__(self):
            # Pickled while the bundle is being written: say so, then hang until killed.
            pathlib.Path(marker).write_text("saving")
            time.sleep(600)
            return dict(self.__dict__)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    Bundle(model, preprocess=SlowStep(), name="crash", version="1.0.0").save(root)
"""


@pytest.mark.slow
def test_killed_save_leaves_no_visible_version(tiny_model, tmp_path):
    root, marker = tmp_path / "root", tmp_path / "saving.marker"
    child = _child(CRASHING_SAVE, str(marker), str(root))
    try:
        _wait_for(marker, child)
        [staging] = list(root.iterdir())  # the save is under way, in its staging directory
        assert staging.name.startswith(".staging-")
        assert (staging / "model.keras").is_file()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert _visible(root) == [] and _hidden(root) == [staging.name]
    assert not (staging / "manifest.json").exists()
    assert list_versions(root) == []
    with pytest.raises(BundleNotFoundError, match=r"holds no published bundle version"):
        Bundle.load(root)
    # the crash cost nothing but a hidden directory: the same version saves fine
    path = _save(tiny_model, root, version="1.0.0")
    assert Bundle.load(root).path == path
    assert _visible(root) == ["1.0.0"]


CONCURRENT_SAVES = """
    import json, pathlib, sys, time
    import keras
    from bundle import Bundle, VersionExistsError

    tag, auto_root, fixed_root, ready, go = sys.argv[1:]
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    pathlib.Path(ready).write_text(tag)
    while not pathlib.Path(go).exists():
        time.sleep(0.001)
    result = {"auto": Bundle(model, name=tag).save(auto_root).name}
    try:
        result["fixed"] = Bundle(model, name=tag, version="7").save(fixed_root).name
    except VersionExistsError as err:
        result["fixed"] = None
        result["error"] = str(err)
    print(json.dumps(result))
"""


@pytest.mark.slow
def test_concurrent_saves_from_two_processes(tmp_path):
    auto_root, fixed_root, go = tmp_path / "auto", tmp_path / "fixed", tmp_path / "go"
    children, readies = [], []
    try:
        for tag in ("a", "b"):
            ready = tmp_path / f"ready-{tag}"
            readies.append(ready)
            args = (tag, str(auto_root), str(fixed_root), str(ready), str(go))
            children.append(_child(CONCURRENT_SAVES, *args))
        for ready, child in zip(readies, children, strict=True):
            _wait_for(ready, child)
        go.write_text("go")  # both are ready: release them at once
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=180)
            assert child.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    # without a version: two distinct numbers, each manifest naming its own directory
    assert sorted(o["auto"] for o in outputs) == ["1", "2"]
    for output, tag in zip(outputs, ("a", "b"), strict=True):
        manifest = json.loads((auto_root / output["auto"] / "manifest.json").read_text())
        assert (manifest["name"], manifest["version"]) == (tag, output["auto"])
    assert _hidden(auto_root) == []
    assert {Bundle.load(auto_root, version=v).name for v in ("1", "2")} == {"a", "b"}

    # with the same version: one wins, the other is told the version exists
    winners = [o for o in outputs if o["fixed"] == "7"]
    losers = [o for o in outputs if o["fixed"] is None]
    assert len(winners) == 1 and len(losers) == 1
    assert "Version '7' already exists" in losers[0]["error"]
    assert "overwrite=True" in losers[0]["error"]
    assert _visible(fixed_root) == ["7"] and _hidden(fixed_root) == []
    winner_tag = "a" if outputs[0] is winners[0] else "b"
    assert Bundle.load(fixed_root).name == winner_tag


def test_gc_reclaims_what_a_crashed_save_left_and_spares_a_live_one(tiny_model, tmp_path):
    """A live save holds its staging folder's lock: gc tells it from a dead one by the lock,
    not by its age."""
    import bundle

    root = tmp_path / "root"
    _save(tiny_model, root, version="1.0.0")
    dead = root / ".staging-dead"
    (dead / "steps").mkdir(parents=True)
    (dead / "steps" / "x.npz").write_bytes(b"x" * 10)
    with staging(root) as live:
        (live / "model.keras").write_bytes(b"partial")
        report = bundle.gc(root)
        assert report.dry_run and [item.location for item in report.leftovers] == [str(dead)]
        assert report.leftovers[0].what == "an interrupted save"
        assert report.leftovers[0].size == 10
        assert report.skipped == (f"{live}: in use by a running process",)
        assert dead.exists()  # a dry run changes nothing
        done = bundle.gc(root, dry_run=False)
        assert [item.location for item in done.leftovers] == [str(dead)] and not done.dry_run
        assert not dead.exists() and live.exists()
    assert _hidden(root) == [] and list_versions(root) == ["1.0.0"]
