"""Export benchmark: the fused TensorFlow graph vs the NumPy replay + model, same run.

The reference tabular workload (benchmarks/workloads.py) is saved as a bundle, loaded back
and exported with `bundle.export.export_saved_model`; the SavedModel is loaded with
``tf.saved_model.load`` and its ``serving_default`` signature called in this process.
Every figure is measured for each path in the same run, on the same rows:

- ``Bundle.predict``: input contract + compiled NumPy replay + traced model + labels;
- replay + model: the same without the input contract (a canonical DataFrame in);
- graph (tensors ready): the signature called on prepared ``tf.Tensor`` columns;
- graph (from a DataFrame): the same plus the DataFrame -> tensors conversion a Python
  client does (TF Serving parses JSON into tensors itself).

Usage:
    python benchmarks/export_bench.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/export_bench.py --quick    # small sizes, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402

WORK = HERE / "_work" / "export"
RESULTS = HERE / "RESULTS.md"
SECTION = "Export"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def machine() -> str:
    return _report.machine_line(
        ("tensorflow-cpu", "tensorflow", "keras", "scikit-learn", "numpy", "pandas")
    )


def to_feeds(frame: pd.DataFrame, info: dict) -> dict:
    """A DataFrame as the signature's inputs: one array per column, missing text -> the token."""
    feeds = {}
    for spec in info["inputs"]:
        column = frame[spec["column"]]
        if spec["dtype"] == "string":
            values = column.to_numpy(dtype=object, na_value=info["missing_token"])
            feeds[spec["name"]] = values
        else:
            feeds[spec["name"]] = column.to_numpy(dtype=spec["dtype"])
    return feeds


def interleaved(paths: dict, calls: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each path, measured in rounds that alternate the paths, so that
    every path sees the same background load (the machine is shared)."""
    for fn in paths.values():
        for _ in range(min(calls, 20)):
            fn()  # warm-up: traces, caches, thread pools
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def measure(quick: bool) -> dict:
    import tensorflow as tf
    from workloads import reference_tabular

    from bundle import Bundle
    from bundle.export import INFO_FILE, export_saved_model

    n_rows, calls, rounds = (5_000, 10, 2) if quick else (100_000, 50, 8)
    shutil.rmtree(WORK, ignore_errors=True)
    work = reference_tabular()
    bundle = Bundle.load(work.save_bundle(WORK / "bundle"))
    start = time.perf_counter()
    out = export_saved_model(bundle, WORK / "serving" / "reference" / "1")
    export_s = time.perf_counter() - start
    info = json.loads((out / INFO_FILE).read_text())
    signature = tf.saved_model.load(str(out)).signatures["serving_default"]

    one, many = work.holdout(1), work.holdout(n_rows)

    def tensors(frame):
        return {name: tf.constant(values) for name, values in to_feeds(frame, info).items()}

    one_feeds, many_feeds = tensors(one), tensors(many)
    engine = bundle._get_engine()  # the predict path without the input contract
    one_canonical = bundle.input_schema.coerce(one)
    many_canonical = bundle.input_schema.coerce(many)

    def replay(canonical):
        return engine.postprocess(engine.run(canonical, batch_size=None))

    def graph(feeds):
        result = signature(**feeds)
        return result["labels"].numpy(), result["scores"].numpy()

    single = {
        "predict": lambda: bundle.predict(one),
        "replay": lambda: replay(one_canonical),
        "graph": lambda: graph(one_feeds),
        "graph_df": lambda: graph(tensors(one)),
    }
    batch = {
        "predict": lambda: bundle.predict(many),
        "replay": lambda: replay(many_canonical),
        "graph": lambda: graph(many_feeds),
        "graph_df": lambda: graph(tensors(many)),
    }
    results: dict = {"n_rows": n_rows, "calls": calls * rounds, "rounds": rounds}
    results.update(export_s=export_s, load_before=load_average())
    for name, times in interleaved(single, calls, rounds).items():
        results[f"{name}_p50"] = float(np.percentile(times, 50) * 1e3)
        results[f"{name}_p99"] = float(np.percentile(times, 99) * 1e3)
    for name, times in interleaved(batch, 1, rounds).items():
        results[f"{name}_s"] = min(times)
        results[f"{name}_median_s"] = float(np.median(times))
    results["load_after"] = load_average()
    labels, scores = graph(many_feeds)
    expected_scores = bundle.predict(many, postprocess=False)
    expected_labels = bundle.predict(many)
    results["max_abs"] = float(np.abs(scores - expected_scores).max())
    results["labels_equal"] = float(
        (np.array([v.decode() for v in labels.tolist()]) == expected_labels).mean()
    )
    results["saved_model_kib"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    results["saved_model_kib"] /= 1024
    results["bundle_kib"] = sum(p.stat().st_size for p in bundle.path.rglob("*") if p.is_file())
    results["bundle_kib"] /= 1024
    return results


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.2f}x"


def render(results: dict, date: str, where: str) -> str:
    r = results
    n = f"{r['n_rows']:,}"
    rows = [
        ("`Bundle.predict` (contract + NumPy replay + model)", "predict"),
        ("NumPy replay + model (no input contract)", "replay"),
        ("fused graph, tensors ready", "graph"),
        ("fused graph, from a DataFrame", "graph_df"),
    ]
    lines = [
        f"## {SECTION}",
        "",
        f"Measured {date} on {where} by `python benchmarks/export_bench.py`. Reference "
        "tabular workload (benchmarks/workloads.py); the bundle is exported with "
        "`export_saved_model` and the SavedModel's `serving_default` signature is called "
        "in-process after `tf.saved_model.load`. All paths run in the same process, "
        f"in alternating rounds, on the same rows (1 row: p50/p99 of {r['calls']:,} calls; "
        f"{n} rows: best and median of {r['rounds']} calls of the whole batch, one call each; "
        "labels and scores included). "
        f"Load average (1 min) before / after: {r['load_before']} / {r['load_after']}, on "
        f"{os.cpu_count()} CPUs: the machine is shared, compare rows of one run only.",
        "",
        f"| path | 1 row p50 | 1 row p99 | {n} rows (best) | (median) | rows/s (best) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {r[key + '_p50']:.2f} ms | {r[key + '_p99']:.2f} ms | "
            f"{r[key + '_s']:.3f} s | {r[key + '_median_s']:.3f} s | "
            f"{r['n_rows'] / r[key + '_s']:,.0f} |"
        )
    lines += [
        "",
        "Ratios (time of the first over the second; above 1 means the graph is faster):",
        "",
        f"| comparison | 1 row p50 | {n} rows (best) |",
        "|---|---:|---:|",
        f"| `Bundle.predict` / fused graph (tensors ready) | "
        f"{ratio(r['predict_p50'], r['graph_p50'])} | {ratio(r['predict_s'], r['graph_s'])} |",
        f"| `Bundle.predict` / fused graph (from a DataFrame) | "
        f"{ratio(r['predict_p50'], r['graph_df_p50'])} | "
        f"{ratio(r['predict_s'], r['graph_df_s'])} |",
        f"| replay + model / fused graph (tensors ready) | "
        f"{ratio(r['replay_p50'], r['graph_p50'])} | {ratio(r['replay_s'], r['graph_s'])} |",
        "",
        f"Parity on the {n} rows: max abs score difference {r['max_abs']:.1e}, "
        f"{r['labels_equal']:.2%} identical labels. Export took {r['export_s']:.1f} s; the "
        f"SavedModel is {r['saved_model_kib']:,.0f} KiB (the bundle: {r['bundle_kib']:,.0f} KiB).",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others alone."""
    _report.write_section(SECTION, text, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; do not write")
    args = parser.parse_args(argv)
    results = measure(args.quick)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    text = render(results, time.strftime("%Y-%m-%d"), machine())
    print(text)
    if not args.quick:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
