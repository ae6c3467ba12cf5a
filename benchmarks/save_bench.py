"""Save benchmark: inference-only bundle sizes, and what proving a save costs.

1. Size: MobileNetV3Small (``keras.applications.MobileNetV3Small(weights=None)``: no
   download), compiled with Adam and trained one step so its optimizer holds state, saved
   with the optimizer's state (the default) and with ``include_optimizer=False``.
2. The cost of ``save(verify=True)`` (the default: the bundle is rebuilt from its files as a
   fresh process would rebuild it, and its stored example replayed) against
   ``save(verify=False)``, on the same MobileNetV3Small bundle and on a small dense model
   (the fixed cost), in alternating rounds, medians.

Usage:
    python benchmarks/save_bench.py            # writes the "Save" section of RESULTS.md
    python benchmarks/save_bench.py --quick    # a smoke run: 1 round, no RESULTS.md
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

WORK = HERE / "_work" / "save"
SECTION = "Save"
VERSIONS = ("tensorflow-cpu", "keras", "numpy")
MIB = 1 << 20


def mobilenet() -> tuple[object, object]:
    """MobileNetV3Small with random weights, trained one step (Adam state built)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3))
    model.compile("adam", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (8, 96, 96, 3)).astype("float32")
    model.fit(images, np.arange(8), epochs=1, batch_size=8, verbose=0)
    return model, images


def dense() -> tuple[object, object]:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16), keras.layers.Dense(3)])
    model.compile("adam", loss="mse")
    rows = np.random.default_rng(0).normal(size=(100, 10)).astype("float32")
    model.fit(rows, np.zeros((100, 3)), epochs=1, verbose=0)
    return model, rows


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def save_seconds(model: object, example: object, name: str, **options: object) -> float:
    from bundle import Bundle

    start = time.perf_counter()
    Bundle(model, input_example=example, name=name, version="1").save(
        WORK / name, overwrite=True, **options
    )
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    from bundle import Bundle

    shutil.rmtree(WORK, ignore_errors=True)
    model, images = mobilenet()
    full = Bundle(model, input_example=images, name="mobilenet", version="1").save(WORK / "full")
    light = Bundle(model, input_example=images, name="mobilenet", version="1").save(
        WORK / "light", include_optimizer=False
    )
    sizes = {
        "default (with the optimizer state)": (folder_size(full), (full / "model.keras")),
        "include_optimizer=False": (folder_size(light), (light / "model.keras")),
    }
    lines = [
        f"## {SECTION}",
        "",
        _report.machine_line(VERSIONS) + " (a shared, busy machine: a quiet re-run may differ).",
        "",
        "MobileNetV3Small (`weights=None`, 96x96x3 inputs, 1000 classes), compiled with Adam "
        "and trained one step:",
        "",
        "| bundle | bundle size | model.keras |",
        "|---|---|---|",
    ]
    for label, (total, model_file) in sizes.items():
        lines.append(
            f"| {label} | {total / MIB:.1f} MiB | {model_file.stat().st_size / MIB:.1f} MiB |"
        )
    saved = 1 - folder_size(light) / folder_size(full)
    lines += ["", f"An inference-only bundle is {saved:.0%} smaller.", ""]

    timings = {}
    for label, (built, example) in {
        "MobileNetV3Small": (model, images),
        "Dense 10-16-3": dense(),
    }.items():
        seen: dict[bool, list[float]] = {True: [], False: []}
        save_seconds(built, example, "warm", verify=True)  # first save traces: not counted
        for _ in range(rounds):
            for verify in (True, False):
                seen[verify].append(save_seconds(built, example, "timed", verify=verify))
        timings[label] = {key: statistics.median(values) for key, values in seen.items()}
    lines += [
        f"`save` with and without the replay that proves the bundle loads (medians of "
        f"{rounds} alternating rounds):",
        "",
        "| model | verify=True | verify=False | cost of verify |",
        "|---|---|---|---|",
    ]
    for label, medians in timings.items():
        cost = medians[True] - medians[False]
        lines.append(
            f"| {label} | {medians[True]:.2f} s | {medians[False]:.2f} s | "
            f"+{cost:.2f} s ({cost / medians[False]:+.0%}) |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        _report.write_section(SECTION, text)
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
