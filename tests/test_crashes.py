"""A crash at any point of a save, an overwrite or a tag leaves the old or the new version.

Every crash point is tried, deterministically: `crash_harness.py` forks a child per point
that dies (``os._exit``) just before its Nth file-system audit event on a local root (with
the atomic folder swap, and without it as on NFS), or before its Nth change through a
fault-injecting fsspec filesystem over the real moto S3 server. After each crash:

- what is published is the old or the new version, whole: it verifies and loads;
- ``bundle.gc`` reclaims what the crash left, and never changes what is published;
- the operation, retried, succeeds (no claim or lock says "already exists" falsely).

The last point of each loop is the one where the operation finished without crashing.
Real ``kill -9`` of real ``Bundle.save`` processes at random moments closes the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from crash_harness import CRASHED, publish_copy
from test_s3 import BUCKET, s3_endpoint  # noqa: F401  (fixtures: the moto server)
from test_s3 import s3 as s3_options  # noqa: F401

import bundle
from bundle import Bundle, VersionExistsError
from bundle.format.integrity import verify_files
from bundle.format.manifest import read_manifest
from bundle.storage import fetch, open_root

HARNESS = Path(__file__).with_name("crash_harness.py")
MAX_POINTS = 400


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_model):
    """Two real saved versions of one bundle, told apart by their metadata: old and new."""
    base = tmp_path_factory.mktemp("sources")
    return {
        run: Bundle(tiny_model, name="m", version="1.0.0", metadata={"run": run}).save(base / run)
        for run in ("old", "new")
    }


class Harness:
    """The fork server of `crash_harness.py` for one operation."""

    def __init__(self, op: str, root: str, source: Path, version: str, mode: str, options=None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("PYTHONPATH", None)
        args = [op, root, str(source), version, mode]
        if options is not None:
            args.append(json.dumps(options))
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def crash_at(self, point: int, root: str = "") -> int:
        self.process.stdin.write(f"{point} {root}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the harness died:\n{self.process.stderr.read()}")
        return int(line)

    def close(self) -> str:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        errors = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return errors


def run_every_crash_point(harness: Harness, reset, check) -> list[int]:
    """Crash at point 1, 2, ... until the operation completes; `check` after each one."""
    codes = []
    try:
        for point in range(1, MAX_POINTS):
            reset()
            code = harness.crash_at(point)
            codes.append(code)
            assert code in (CRASHED, 0), f"point {point}: the operation failed on its own"
            check(point, completed=code == 0)
            if code == 0:
                return codes
        raise AssertionError(f"the operation did not complete within {MAX_POINTS} steps")
    finally:
        errors = harness.close()
        assert not errors, errors


def published(root: str, **options) -> dict[str, str]:
    """``{version: run}`` of every published version, each verified against its manifest."""
    found = {}
    for info in bundle.list_versions(root, **options):
        path = fetch(root, info.version, **options)
        manifest = read_manifest(path)
        verify_files(path, manifest.files, label=manifest.label)
        assert manifest.version == info.version
        found[info.version] = manifest.metadata["run"]
    return found


def local_leftovers(root: Path) -> list[str]:
    hidden = [p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".aliases"]
    aliases = root / ".aliases"
    temp = [p.name for p in aliases.rglob(".*")] if aliases.is_dir() else []
    return sorted(hidden + temp)


# ---------------------------------------------------------------------------- local roots
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["audit", "audit-noswap"])
def test_every_crash_point_of_a_local_overwrite(sources, tmp_path, mode):
    root = tmp_path / "root"
    seen = []

    def reset():
        shutil.rmtree(root, ignore_errors=True)
        publish_copy(str(root), sources["old"], "1.0.0", overwrite=False)

    def check(point, completed):
        state = published(str(root))
        assert state in ({"1.0.0": "old"}, {"1.0.0": "new"}), (point, state)
        assert not completed or state == {"1.0.0": "new"}
        seen.append(state["1.0.0"])
        assert Bundle.load(root).metadata["run"] == state["1.0.0"]  # loadable, whole
        assert Bundle.load(root / "1.0.0").metadata["run"] == state["1.0.0"]
        bundle.gc(root, dry_run=False)
        assert local_leftovers(root) == [], point
        assert published(str(root)) == state  # gc never changes what is published
        publish_copy(str(root), sources["new"], "1.0.0", overwrite=True)  # the retry
        assert published(str(root)) == {"1.0.0": "new"} and local_leftovers(root) == []

    harness = Harness("overwrite", str(root), sources["new"], "1.0.0", mode)
    codes = run_every_crash_point(harness, reset, check)
    # the old version until one step, the new one from then on: never neither
    switch = seen.index("new")
    assert set(seen[:switch]) == {"old"} and set(seen[switch:]) == {"new"}
    assert len(codes) > 20  # every open, rename, lock and swap of the overwrite was a crash point


@pytest.mark.slow
def test_every_crash_point_of_a_local_save(sources, tmp_path):
    root = tmp_path / "root"
    seen = []

    def reset():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()

    def check(point, completed):
        state = published(str(root))
        assert state in ({}, {"1.0.0": "new"}), (point, state)
        assert not completed or state == {"1.0.0": "new"}
        seen.append(bool(state))
        bundle.gc(root, dry_run=False)
        assert local_leftovers(root) == [], point
        assert published(str(root)) == state
        if state:  # published whole: a retry is told so
            with pytest.raises(VersionExistsError, match=r"Version '1\.0\.0' already exists"):
                publish_copy(str(root), sources["new"], "1.0.0", overwrite=False)
        else:  # nothing published: the retry of the same version works
            publish_copy(str(root), sources["new"], "1.0.0", overwrite=False)
        assert Bundle.load(root).metadata["run"] == "new"

    run_every_crash_point(
        Harness("save", str(root), sources["new"], "1.0.0", "audit"), reset, check
    )
    assert seen[0] is False and seen[-1] is True


@pytest.mark.slow
def test_every_crash_point_of_a_local_tag(sources, tmp_path):
    root = tmp_path / "root"

    def reset():
        shutil.rmtree(root, ignore_errors=True)
        publish_copy(str(root), sources["old"], "1.0.0", overwrite=False)
        publish_copy(str(root), sources["new"], "2.0.0", overwrite=False)
        bundle.tag(root, "production", "1.0.0")

    def check(point, completed):
        record = open_root(root).read_alias("production")  # whole, never half-written
        history = [entry["version"] for entry in record["history"]]
        assert (record["version"], history) in (
            ("1.0.0", ["1.0.0"]),
            ("2.0.0", ["1.0.0", "2.0.0"]),
        ), point
        assert not completed or record["version"] == "2.0.0"
        assert Bundle.load(f"{root}@production").version == record["version"]
        bundle.gc(root, dry_run=False)
        assert local_leftovers(root) == [], point
        assert open_root(root).read_alias("production") == record
        retried = bundle.tag(root, "production", "2.0.0")
        assert [entry["version"] for entry in retried["history"]] == [*history, "2.0.0"]

    run_every_crash_point(Harness("tag", str(root), sources["new"], "2.0.0", "audit"), reset, check)


def _leave_leftovers(root: Path, sources: dict) -> None:
    """What killed saves and overwrites leave: an unlocked staging folder, a trash folder,
    a stale copy of a replaced version, and a version that sits only in its set-aside copy."""
    shutil.copytree(sources["new"], root / f".staging-{uuid.uuid4().hex}")
    trash = root / f".trash-{uuid.uuid4().hex}"
    trash.mkdir()
    (trash / "model.keras").write_bytes(b"x" * 100)
    shutil.copytree(root / "1.0.0", root / f".replaced-{uuid.uuid4().hex}-1.0.0")
    os.rename(root / "2.0.0", root / f".replaced-{uuid.uuid4().hex}-2.0.0")


@pytest.mark.slow
def test_every_crash_point_of_a_local_gc(sources, tmp_path):
    root = tmp_path / "root"
    whole = {"1.0.0": "old", "2.0.0": "new"}

    def reset():
        shutil.rmtree(root, ignore_errors=True)
        publish_copy(str(root), sources["old"], "1.0.0", overwrite=False)
        publish_copy(str(root), sources["new"], "2.0.0", overwrite=False)
        _leave_leftovers(root, sources)

    def check(point, completed):
        assert published(str(root)) == whole, point  # gc never loses or mixes a version
        assert Bundle.load(root).metadata["run"] == "new"  # 2.0.0, wherever it sits
        assert not completed or local_leftovers(root) == []
        bundle.gc(root, dry_run=False)  # the re-run finishes the job
        assert local_leftovers(root) == [], point
        assert sorted(p.name for p in root.iterdir()) == ["1.0.0", "2.0.0"]
        assert published(str(root)) == whole

    reset()
    codes = run_every_crash_point(
        Harness("gc", str(root), sources["new"], "", "audit"), reset, check
    )
    assert len(codes) > 10  # each rename, rmtree and unlink of the clean-up was a crash point


@pytest.mark.slow
def test_every_crash_point_of_an_archive(sources, tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    publish_copy(str(root), sources["old"], "1.0.0", overwrite=False)
    archive = out / "m-1.0.0.tar.gz"

    def reset():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()

    def check(point, completed):
        assert published(str(root)) == {"1.0.0": "old"}  # the source is never touched
        visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        assert visible in ([], [archive.name]), (point, visible)  # never a partial archive
        assert not completed or visible == [archive.name]
        if visible:
            assert Bundle.load(archive).metadata["run"] == "old"  # whole: extracts, verifies
        bundle.archive(root, str(archive), version="1.0.0")  # the re-run succeeds
        assert Bundle.load(archive).metadata["run"] == "old"

    run_every_crash_point(Harness("archive", str(root), archive, "1.0.0", "audit"), reset, check)


@pytest.mark.slow
def test_a_full_disk_is_a_storage_error_that_says_how_much_was_needed(tiny_model, tmp_path):
    """A save onto a real small tmpfs that fills up: nothing published, nothing left."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {mounted.stderr}")
    try:
        root = disk / "models"
        first = Bundle(tiny_model, name="m", version="1.0.0", metadata={"run": "old"})
        first.save(root)
        used = shutil.disk_usage(disk).used
        # Room for about half of another version: the next save fills the disk mid-way.
        subprocess.run(["mount", "-o", f"remount,size={used + used // 2}", str(disk)], check=True)
        second = Bundle(tiny_model, name="m", version="2.0.0", metadata={"run": "new"})
        with pytest.raises(bundle.StorageError) as caught:
            second.save(root)
        message = str(caught.value)
        assert re.search(
            rf"The disk holding {re.escape(str(root))} is full \(\d[\d,]* bytes free\): "
            r"No space left on device",
            message,
        ), message
        needed = re.search(r"The save needed more than the ([\d,]+) bytes it had written", message)
        assert needed and int(needed.group(1).replace(",", "")) > 0, message
        assert "Nothing was published" in message and "Free space on that disk" in message
        assert "get_config" not in message  # no unrelated hint about the model
        assert published(str(root)) == {"1.0.0": "old"}  # the earlier version is intact
        assert sorted(p.name for p in root.iterdir()) == ["1.0.0"]  # no partial copy left
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        second.save(root)  # with room again, the same save succeeds
        assert published(str(root)) == {"1.0.0": "old", "2.0.0": "new"}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ---------------------------------------------------------------------------- object storage
def _objects(fs, url: str) -> list[str]:
    prefix = url.removeprefix("s3://").rstrip("/") + "/"
    return sorted(path.removeprefix(prefix) for path in fs.find(prefix))


def _expected_objects(fs, url: str, options: dict) -> list[str]:
    """What a root holds with no leftovers: each manifest and the generation it names."""
    keys = []
    for info in bundle.list_versions(url, **options):
        manifest = fs.cat_file(f"{info.location}/manifest.json")
        generation = ".gen-" + hashlib.sha256(manifest).hexdigest()[:16]
        files = json.loads(manifest)["files"]
        keys += [f"{info.version}/manifest.json"]
        keys += [f"{info.version}/{generation}/{name}" for name in files]
    return sorted(keys)


@pytest.fixture
def s3(request):
    """`storage_options` of the moto server's bucket (test_s3's session fixture)."""
    return request.getfixturevalue("s3_options")


@pytest.fixture
def s3fs_client(s3):
    import s3fs

    return s3fs.S3FileSystem(**s3)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["save", "overwrite"])
def test_every_crash_point_on_object_storage(sources, s3, s3fs_client, op):
    fs = s3fs_client
    base = f"{BUCKET}/crash-{op}-{uuid.uuid4().hex[:8]}"
    roots = iter(f"{base}/{n}/churn" for n in range(MAX_POINTS))
    current = {}
    seen = []
    initial = {"1.0.0": "old"} if op == "overwrite" else {}

    def reset():
        current["root"] = next(roots)
        if op == "overwrite":
            publish_copy(f"s3://{current['root']}", sources["old"], "1.0.0", overwrite=False, **s3)

    def check(point, completed):
        url = f"s3://{current['root']}"
        state = published(url, **s3)
        assert state in (initial, {"1.0.0": "new"}), (point, state)
        assert not completed or state == {"1.0.0": "new"}
        seen.append(state.get("1.0.0"))
        bundle.gc(url, dry_run=False, older_than=0, **s3)
        assert _objects(fs, url) == _expected_objects(fs, url, s3), point  # no orphan, no claim
        assert published(url, **s3) == state
        publish_copy(url, sources["new"], "1.0.0", overwrite=True, **s3)  # the retry works
        assert published(url, **s3) == {"1.0.0": "new"}
        assert _objects(fs, url) == _expected_objects(fs, url, s3)

    # Each crash point runs against a fresh root of its own.
    harness = _FreshRoots(Harness(op, "", sources["new"], "1.0.0", "calls", s3), current)
    run_every_crash_point(harness, reset, check)
    assert seen[0] == initial.get("1.0.0") and seen[-1] == "new"
    assert Bundle.load(f"s3://{current['root']}", **s3).metadata["run"] == "new"


class _FreshRoots:
    """A `Harness` told, at each crash point, the root `reset` just prepared."""

    def __init__(self, harness: Harness, current: dict):
        self.harness, self.current = harness, current

    def crash_at(self, point: int) -> int:
        return self.harness.crash_at(point, f"faulty://{self.current['root']}")

    def close(self) -> str:
        return self.harness.close()


@pytest.mark.slow
def test_every_crash_point_of_a_tag_on_object_storage(sources, s3, s3fs_client):
    root = f"s3://{BUCKET}/crash-tag-{uuid.uuid4().hex[:8]}/churn"
    publish_copy(root, sources["old"], "1.0.0", overwrite=False, **s3)
    publish_copy(root, sources["new"], "2.0.0", overwrite=False, **s3)

    def reset():
        for key in s3fs_client.find(f"{root.removeprefix('s3://')}/.aliases"):
            s3fs_client.rm_file(key)
        bundle.tag(root, "production", "1.0.0", **s3)

    def check(point, completed):
        record = open_root(root, **s3).read_alias("production")
        assert record["version"] in ("1.0.0", "2.0.0")
        assert not completed or record["version"] == "2.0.0"
        assert Bundle.load(f"{root}@production", **s3).version == record["version"]
        retried = bundle.tag(root, "production", "2.0.0", **s3)
        assert [entry["version"] for entry in retried["history"]][-1] == "2.0.0"

    harness = Harness(
        "tag", f"faulty://{root.removeprefix('s3://')}", sources["new"], "2.0.0", "calls", s3
    )
    run_every_crash_point(harness, reset, check)


# ---------------------------------------------------------------------------- kill -9
OVERWRITING = """
    import json, pathlib, sys
    import keras
    from bundle import Bundle

    root, ready, options = sys.argv[1], pathlib.Path(sys.argv[2]), json.loads(sys.argv[3])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    run = 0
    while True:  # overwrite the same version until killed
        run += 1
        Bundle(model, name="m", version="1.0.0", metadata={"run": run}).save(
            root, overwrite=True, **options
        )
        ready.write_text(str(run))
"""


def _kill_while_overwriting(root: str, options: dict, work: Path, delay: float) -> int:
    """Start a process overwriting `root`'s version 1.0.0 in a loop; kill -9 it mid-way."""
    ready = work / f"ready-{uuid.uuid4().hex}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OVERWRITING), root, str(ready), json.dumps(options)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():  # its first overwrite is done: it is in the loop
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer never finished a save"
            time.sleep(0.02)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return int(ready.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill_9_at_random_moments_of_real_overwrites(tmp_path, s3, backend):
    rng = random.Random(0)
    root, options = str(tmp_path / "root"), {}
    if backend == "s3":
        root, options = f"s3://{BUCKET}/kill-{uuid.uuid4().hex[:8]}/churn", s3
    for _round in range(2):
        finished = _kill_while_overwriting(root, options, tmp_path, rng.uniform(0.05, 0.6))
        loaded = Bundle.load(root, **options)  # old or new, whole: it loads and verifies
        assert loaded.version == "1.0.0" and loaded.metadata["run"] >= finished
        assert loaded.verify()
        bundle.gc(root, dry_run=False, older_than=0, **options)
        assert Bundle.load(root, **options).metadata["run"] == loaded.metadata["run"]
    if backend == "local":
        assert local_leftovers(Path(root)) == []
