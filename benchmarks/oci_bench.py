"""OCI registry benchmark: `bundle push` / `bundle pull` against ORAS's Python SDK.

One real registry (Debian's docker-registry, CNCF Distribution) on 127.0.0.1, a bundle with
a ~16 MB model. Per round, in alternating order, each client:

1. pushes the version into an empty repository (every blob uploaded);
2. pushes a second version whose model is unchanged (ours skips blobs the repository has);
3. pulls it into an empty directory (ours also hashes every blob as it streams, checks
   the layers against the bundle manifest, and publishes the version fsynced).

ORAS (`oras.client.OrasClient.push/pull`) is what a team would script to ship model files
through a registry by hand. Reported: medians over rounds and the ratio ORAS time / ours
time (>1: ours is faster), per step.

Usage:
    python benchmarks/oci_bench.py            # full run (7 rounds); writes RESULTS.md
    python benchmarks/oci_bench.py --quick    # a smoke run (2 rounds, smaller model)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from serve_bench import free_port  # noqa: E402

SECTION = "OCI registry"
VERSIONS = ("keras-bundle", "httpx", "oras", "requests")


def make_bundle(root: Path, units: int) -> Path:
    """A bundle whose model is `units`^2 float32 weights (plus a small head)."""
    import keras
    import numpy as np

    from bundle import Bundle

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(units),
            keras.layers.Dense(units),
            keras.layers.Dense(1),
        ]
    )
    example = np.random.default_rng(0).normal(size=(32, 16)).astype("float32")
    return Bundle(model, input_example=example, name="bench", version="1").save(root)


def start_registry(folder: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed: run `make registry`")
    address = f"127.0.0.1:{free_port()}"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: {address}\n"
    )
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
            return process, address
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("the registry did not start")


def second_version(path: Path, folder: Path) -> Path:
    """The same files under version 2: only the manifest is new content."""
    again = folder / "2"
    shutil.copytree(path, again)
    manifest = json.loads((again / "manifest.json").read_text())
    manifest["version"] = "2"
    (again / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return again


def run_ours(path: Path, again: Path, address: str, repo: str, out: Path) -> dict[str, float]:
    import bundle

    target = f"oci://{address}/{repo}"
    times = {}
    start = time.perf_counter()
    bundle.push(path, target)
    times["push"] = time.perf_counter() - start
    start = time.perf_counter()
    bundle.push(again, target)
    times["push unchanged model"] = time.perf_counter() - start
    os.environ["KERAS_BUNDLE_CACHE"] = str(out / "cache")
    start = time.perf_counter()
    bundle.pull(f"{target}:2", out / "models")
    times["pull"] = time.perf_counter() - start
    return times


def run_oras(path: Path, again: Path, address: str, repo: str, out: Path) -> dict[str, float]:
    import oras.client

    client = oras.client.OrasClient(hostname=address, insecure=True)
    times = {}
    here = Path.cwd()
    try:
        for key, folder, tag in (("push", path, "1"), ("push unchanged model", again, "2")):
            files = sorted(
                p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
            )
            os.chdir(folder)
            start = time.perf_counter()
            client.push(target=f"{address}/{repo}:{tag}", files=files)
            times[key] = time.perf_counter() - start
    finally:
        os.chdir(here)
    start = time.perf_counter()
    client.pull(target=f"{address}/{repo}:2", outdir=str(out / "oras"))
    times["pull"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, units = (2, 512) if args.quick else (7, 2048)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        path = make_bundle(base / "models", units)
        again = second_version(path, base / "models-2")
        files = [p for p in path.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        for module in ("httpx", "oras.client"):  # both clients' imports paid before timing
            importlib.import_module(module)

        process, address = start_registry(base / "registry")
        results: dict[str, dict[str, list[float]]] = {"ours": {}, "oras": {}}
        try:
            for round_ in range(rounds):
                order = [("ours", run_ours), ("oras", run_oras)]
                for name, run in order if round_ % 2 == 0 else reversed(order):
                    out = base / f"out-{name}-{round_}"
                    for key, value in run(path, again, address, f"{name}/r{round_}", out).items():
                        results[name].setdefault(key, []).append(value)
        finally:
            process.terminate()
            process.wait()
    lines = [
        f"## {SECTION}",
        "",
        f"{_report.machine_line(VERSIONS)}. One docker-registry on 127.0.0.1, a bundle of "
        f"{size / 1e6:.1f} MB ({len(files)} files), {rounds} "
        "rounds in alternating order; medians. Ratio = ORAS time / keras-bundle time.",
        "",
        "| step | keras-bundle | ORAS SDK | ratio |",
        "|---|---|---|---|",
    ]
    for key in results["ours"]:
        mine, theirs = (
            statistics.median(results["ours"][key]),
            statistics.median(results["oras"][key]),
        )
        lines.append(
            f"| {key} | {mine * 1000:.0f} ms | {theirs * 1000:.0f} ms | {theirs / mine:.2f}x |"
        )
    lines += [
        "",
        "keras-bundle's pull hashes every blob as it streams (against its layer digest, "
        "which must equal the manifest's sha256) and publishes the version "
        "atomically and fsynced; ORAS's SDK writes the files as they come. Both skip blobs "
        "the repository has.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        _report.write_section(SECTION, text)


if __name__ == "__main__":
    main()
