"""Two real processes saving to the same root at the same moment, locally and on S3.

Each writer is a fresh interpreter (`python -c`) that builds a tiny Keras model, warms up
with a throwaway save, says it is ready and polls for a barrier file; the test creates the
file once both are ready, so both saves start together. Two races per backend: without a
version (both must get their own number) and with the same explicit version (exactly one
wins, the other gets VersionExistsError). During each race a watcher thread lists the root
in a loop and checks every version it lists: a partial version must never be visible.

Importing TensorFlow dominates the cost, so the same two writers run all four races.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_s3 import BUCKET, s3, s3_endpoint  # noqa: F401  (fixtures: the moto server)

import bundle
from bundle import Bundle

pytestmark = pytest.mark.slow
TAGS = ("a", "b")
BACKENDS = ("local", "s3")
STAGES = {"auto": None, "fixed": "7"}  # stage -> the version both writers ask for

WRITER = """
    import json, pathlib, sys, tempfile, time
    import keras
    import bundle
    from bundle import Bundle

    tag, workdir, races = sys.argv[1:]
    workdir, races = pathlib.Path(workdir), json.loads(races)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    # Warm up, so that both writers reach each race with the same work left to do.
    Bundle(model, name="warm-up").save(tempfile.mkdtemp())
    for race in races:
        if race["options"]:  # the S3 client and its event loop
            bundle.list_versions(race["root"], **race["options"])

    for race in races:
        name, version = race["name"], race["version"]
        writer = Bundle(model, name=f"race-{tag}", version=version, metadata={"writer": tag})
        (workdir / f"ready-{name}-{tag}").write_text("ready")
        while not (workdir / f"go-{name}").exists():
            time.sleep(0.0005)
        try:
            location = writer.save(race["root"], **race["options"])
        except Exception as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
        else:
            result = {"location": str(location)}
        partial = workdir / f".result-{name}-{tag}"
        partial.write_text(json.dumps(result))
        partial.rename(workdir / f"result-{name}-{tag}.json")
"""


class Watcher(threading.Thread):
    """Lists a root in a loop; every version it lists must verify (manifest and files)."""

    def __init__(self, root: str, options: dict[str, Any]):
        super().__init__(daemon=True)
        self.root, self.options = root, options
        self.rounds = 0
        self.seen: set[str] = set()
        self.problems: list[str] = []
        self._done = threading.Event()  # not `_stop`: Thread has a method of that name

    def run(self) -> None:
        while not self._done.is_set():
            self.look()
        self.look()  # once more, after both writers are done

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=120)

    def look(self) -> None:
        try:
            infos = bundle.list_versions(self.root, **self.options)
        except Exception as exc:
            self.problems.append(f"list_versions: {exc!r}")
            return
        for info in infos:
            try:
                report = bundle.verify(info.location, load=False, **self.options)
            except Exception as exc:
                self.problems.append(f"{info.version}: {exc!r}")
                continue
            if not report:
                self.problems.append(f"{info.version}: {report}")
            self.seen.add(info.version)
        self.rounds += 1


@dataclass
class Race:
    """One race: where both writers saved, what each got, what the watcher saw."""

    name: str
    root: str
    options: dict[str, Any]
    version: str | None
    results: dict[str, dict[str, str]] = field(default_factory=dict)  # tag -> result
    watcher: Watcher | None = None

    def version_of(self, tag: str) -> str:
        return self.results[tag]["location"].rstrip("/").rsplit("/", 1)[-1]


def _start_writer(tag: str, workdir: Path, races: list[Race]) -> Any:
    """A writer process; its output goes to ``writer-<tag>.log`` (a pipe could fill up)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    spec = [
        {"name": r.name, "root": r.root, "options": r.options, "version": r.version} for r in races
    ]
    args = [tag, str(workdir), json.dumps(spec)]
    with open(workdir / f"writer-{tag}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _log(workdir: Path, tag: str) -> str:
    return (workdir / f"writer-{tag}.log").read_text()


def _wait_for(path: Path, process: subprocess.Popen, tag: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            log = _log(path.parent, tag)
            raise AssertionError(f"writer {tag} exited with {process.returncode}:\n{log}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.01)


def run_races(workdir: Path, races: list[Race]) -> dict[str, Race]:
    """Start two writers, then release them together into each race in turn."""
    workdir.mkdir(parents=True, exist_ok=True)
    writers = {tag: _start_writer(tag, workdir, races) for tag in TAGS}
    try:
        for race in races:
            for tag, process in writers.items():
                _wait_for(workdir / f"ready-{race.name}-{tag}", process, tag)
            race.watcher = Watcher(race.root, race.options)
            race.watcher.start()
            try:
                (workdir / f"go-{race.name}").write_text("go")  # both are ready: release them
                for tag, process in writers.items():
                    result = workdir / f"result-{race.name}-{tag}.json"
                    _wait_for(result, process, tag)
                    race.results[tag] = json.loads(result.read_text())
            finally:
                race.watcher.stop()
        for tag, process in writers.items():
            assert process.wait(timeout=60) == 0, _log(workdir, tag)
    finally:
        for process in writers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return {race.name: race for race in races}


@pytest.fixture(scope="module")
def all_races(tmp_path_factory, request):
    """Every race, run once: {"local-auto": Race, "local-fixed": ..., "s3-auto": ..., ...}."""
    options = {"local": {}, "s3": request.getfixturevalue("s3")}
    base = tmp_path_factory.mktemp("races")
    prefix = f"s3://{BUCKET}/races-{uuid.uuid4().hex[:8]}"
    roots = {"local": str(base / "local"), "s3": prefix}
    races = [
        Race(f"{backend}-{stage}", f"{roots[backend]}/{stage}/churn", options[backend], version)
        for backend in BACKENDS
        for stage, version in STAGES.items()
    ]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KERAS_BUNDLE_CACHE", str(base / "watcher-cache"))  # the watcher downloads
        return run_races(base / "work", races)


@pytest.fixture(params=BACKENDS)
def races(request, all_races, tmp_path, monkeypatch):
    """The two races on one backend: {"auto": Race, "fixed": Race}."""
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))
    return {stage: all_races[f"{request.param}-{stage}"] for stage in STAGES}


def test_writers_without_a_version_get_distinct_versions(races):
    race = races["auto"]
    assert all("location" in result for result in race.results.values()), race.results
    versions = {tag: race.version_of(tag) for tag in TAGS}
    assert sorted(versions.values()) == ["1", "2"]
    assert [info.version for info in bundle.list_versions(race.root, **race.options)] == ["1", "2"]
    for tag, version in versions.items():
        loaded = Bundle.load(race.root, version=version, **race.options)
        assert (loaded.name, loaded.version, loaded.metadata["writer"]) == (
            f"race-{tag}",
            version,
            tag,
        )
        assert loaded.verify()
    if not race.options:  # locally, nothing is left behind either
        assert sorted(p.name for p in Path(race.root).iterdir()) == ["1", "2"]


def test_writers_of_the_same_version_one_wins(races):
    race = races["fixed"]
    winners = [tag for tag, result in race.results.items() if "location" in result]
    losers = [tag for tag, result in race.results.items() if "error" in result]
    assert len(winners) == 1 and len(losers) == 1, race.results
    [winner], [loser] = winners, losers
    assert race.version_of(winner) == "7"
    error = race.results[loser]
    assert error["error"] == "VersionExistsError"
    assert error["message"].startswith(f"Version '7' already exists under {race.root}")
    assert error["message"].endswith("or pass overwrite=True to replace it.")
    assert [info.version for info in bundle.list_versions(race.root, **race.options)] == ["7"]
    loaded = Bundle.load(race.root, **race.options)
    assert loaded.metadata["writer"] == winner and loaded.name == f"race-{winner}"
    assert loaded.verify()
    if not race.options:
        assert sorted(p.name for p in Path(race.root).iterdir()) == ["7"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_partial_version_is_ever_visible(races, stage):
    watcher = races[stage].watcher
    assert watcher.problems == []
    assert watcher.rounds >= 2  # it was listing while the writers raced, and once after
    expected = {"1", "2"} if stage == "auto" else {"7"}
    assert watcher.seen == expected
