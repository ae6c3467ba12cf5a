"""Load benchmark: what a snapshot load costs on a large model.

`Bundle.load` reads every part through a snapshot (bundle/format/snapshot.py): the version
directory is opened once, each file is hashed from its open descriptor and the parts are
read through links to those descriptors, so a concurrent ``save(overwrite=True)`` can never
mix two versions. Before, the files were hashed by path and opened again by path. Measured
on a bundle whose model file is large (512 MiB of float32 weights by default), alternating
rounds, medians:

1. taking and releasing a snapshot vs hashing the same files by path (the old verification):
   the snapshot's extra cost is what it adds to every load;
2. the copy fallback (used where /proc/self/fd does not exist) for comparison;
3. the whole ``Bundle.load`` vs ``keras.saving.load_model`` of the same ``.keras`` file, the
   alternative a user would pick (no hashes, no preprocessing, no trust decision).

Usage:
    python benchmarks/load_bench.py            # 512 MiB model; writes benchmarks/RESULTS.md
    python benchmarks/load_bench.py --quick    # a smoke run: 32 MiB, 3 rounds, no RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402

WORK = HERE / "_work" / "load"
SECTION = "Load"
VERSIONS = ("tensorflow-cpu", "keras", "numpy")


def build(size_mib: int) -> Path:
    """A bundle whose model holds about `size_mib` MiB of weights (one wide Dense layer)."""
    import keras
    import numpy as np

    from bundle import Bundle

    shutil.rmtree(WORK, ignore_errors=True)
    width = 4096
    inputs = max(1, size_mib * (1 << 20) // (4 * width))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(width)])
    example = np.zeros((2, inputs), "float32")
    return Bundle(model, input_example=example, name="large", version="1").save(WORK / "root")


def timed(function, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def alternate(named: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each function, run in alternating rounds (one of each per turn)."""
    seen: dict[str, list[float]] = {name: [] for name in named}
    for _ in range(rounds):
        for name, function in named.items():
            seen[name] += timed(function, 1)
    return {name: statistics.median(values) for name, values in seen.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    size, rounds = (32, 3) if args.quick else (args.size_mib, args.rounds)

    import keras

    import bundle.format.snapshot as snapshot_module
    from bundle import Bundle
    from bundle.format.integrity import verify_files
    from bundle.format.manifest import read_manifest
    from bundle.format.snapshot import open_snapshot

    path = build(size)
    manifest = read_manifest(path)
    total = sum(entry["size"] for entry in manifest.files.values())

    def by_path() -> None:
        verify_files(path, manifest.files, label=manifest.label)

    def snapshot() -> None:
        open_snapshot(path).close()

    def copied() -> None:
        saved = snapshot_module._PROC_FD
        snapshot_module._PROC_FD = WORK / "no-proc"
        try:
            open_snapshot(path).close()
        finally:
            snapshot_module._PROC_FD = saved

    verify = alternate({"hash by path": by_path, "snapshot": snapshot, "copy": copied}, rounds)
    loads = alternate(
        {
            "Bundle.load": lambda: Bundle.load(path),
            "keras.saving.load_model": lambda: keras.saving.load_model(
                str(path / "model.keras"), compile=False
            ),
        },
        rounds,
    )
    extra = verify["snapshot"] - verify["hash by path"]
    lines = [
        f"## {SECTION}",
        "",
        f"{_report.machine_line(VERSIONS)}. A bundle of {total / (1 << 20):,.0f} MiB "
        f"({manifest.model['file']} holds the weights); medians of {rounds} alternating "
        "rounds, page cache warm.",
        "",
        "| | seconds | vs hashing by path |",
        "|---|---|---|",
    ]
    for name, seconds in verify.items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds / verify['hash by path']:.2f}x |")
    lines += [
        "",
        f"The snapshot adds {extra * 1000:+.0f} ms to a load of this bundle "
        f"({extra / max(loads['Bundle.load'], 1e-9):+.1%} of `Bundle.load`); the copy "
        f"fallback adds {(verify['copy'] - verify['hash by path']) * 1000:+.0f} ms.",
        "",
        "| | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in loads.items()]
    lines.append(
        f"\n`Bundle.load` takes {loads['Bundle.load'] / loads['keras.saving.load_model']:.2f}x "
        "the time of `keras.saving.load_model` alone (hashing every byte, the trust decision, "
        "the steps and the warm-up trace)."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        _report.write_section(SECTION, text)
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
