"""Backend benchmarks: keras-bundle vs the hand-written pipeline on each Keras backend.

The reference tabular and image workloads of predict_bench.py are trained and saved once
(on TensorFlow: the model file is the same on every backend); then, for each installed
backend (TensorFlow, JAX, PyTorch), one fresh process running Keras on it loads the bundle
and the hand-written pipeline (``joblib.load`` + ``keras.saving.load_model`` + ``transform``
+ ``model.predict`` + ``inverse_transform``) and measures both: single-row latency (p50,
p99) and rows/s, the throughput as the median of alternating rounds. Each backend's bundle
is compared with that backend's own ``model.predict``, in the same process. On PyTorch it
also measures ``torch.compile`` of the model (first-call time, one row, rows/s): the
figures behind keras-bundle not compiling there.

Usage:
    python benchmarks/backends_bench.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/backends_bench.py --quick    # small sizes, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
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
from predict_bench import HAND_LOAD, HAND_SAVE, TRAIN_IMAGE, TRAIN_TABULAR  # noqa: E402

WORK = HERE / "_work" / "backends"
SECTION = "Backends"
BACKENDS = ("tensorflow", "jax", "torch")
LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}

MEASURE = r"""
import json, sys, time, numpy as np
sys.path.insert(0, {here!r})
from bundle import Bundle
{hand_load}
import keras
def rows(n):
    if {kind!r} == "tabular":
        from workloads import reference_frame
        return reference_frame(n, seed=1)[0]
    images = np.load({images!r})
    return images[np.arange(n) % len(images)]
b = Bundle.load({bundle!r}, trusted=True)
one, many = rows(1), rows({n_rows})
def lat(fn, n):
    for _ in range(10): fn()
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return float(np.percentile(out, 50) * 1e3), float(np.percentile(out, 99) * 1e3)
def once(fn):
    t = time.perf_counter(); fn(); return {n_rows} / (time.perf_counter() - t)
res = {{"backend": keras.backend.backend(),
        "function": type(b._get_engine().function()).__name__}}
res["bundle_p50"], res["bundle_p99"] = lat(lambda: b.predict(one), {n_calls})
res["hand_p50"], res["hand_p99"] = lat(lambda: hand_predict(one), {n_calls})
b.predict(many); hand_predict(many)
res["bundle_rps_runs"], res["hand_rps_runs"] = [], []
for _ in range({rounds}):  # alternating: a burst of load hits one round of each
    res["bundle_rps_runs"].append(once(lambda: b.predict(many)))
    res["hand_rps_runs"].append(once(lambda: hand_predict(many)))
res["bundle_rps"] = float(np.median(res["bundle_rps_runs"]))
res["hand_rps"] = float(np.median(res["hand_rps_runs"]))
agree = b.predict(many[:2000]) if b.postprocess else b.predict(many[:2000]).argmax(-1)
hand = hand_predict(many[:2000])
hand = hand if b.postprocess else hand.argmax(-1)
res["same_labels"] = float((np.asarray(agree) == np.asarray(hand)).mean())
if {torch_compile} and res["backend"] == "torch":
    import torch
    model = b.model
    engine = b._get_engine()
    x1, xn = engine.prepare(b.input_schema.coerce(one)), engine.prepare(b.input_schema.coerce(many))
    compiled = torch.compile(lambda t: model(t, training=False))
    def caller(forward):
        def call(x):
            with torch.inference_mode():
                return forward(torch.as_tensor(np.asarray(x)).float()).cpu().numpy()
        return call
    call, eager = caller(compiled), caller(lambda t: model(t, training=False))
    t = time.perf_counter(); call(x1); res["compile_first_s"] = time.perf_counter() - t
    step = 16384 if {kind!r} == "tabular" else 256
    def chunks(fn):
        return lambda: [fn(xn[start:start + step]) for start in range(0, len(xn), step)]
    chunks(call)(); chunks(eager)()
    res["compile_p50"] = lat(lambda: call(x1), {n_calls})[0]
    res["eager_p50"] = lat(lambda: eager(x1), {n_calls})[0]
    res["compile_rps_runs"], res["eager_rps_runs"] = [], []
    for _ in range({rounds}):
        res["compile_rps_runs"].append(once(chunks(call)))
        res["eager_rps_runs"].append(once(chunks(eager)))
    res["compile_rps"] = float(np.median(res["compile_rps_runs"]))
    res["eager_rps"] = float(np.median(res["eager_rps_runs"]))
res["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(res))
"""


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


@contextlib.contextmanager
def keras_backend(backend: str):
    """Child processes started inside run Keras on `backend`."""
    before = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = backend
    try:
        yield
    finally:
        os.environ.pop("KERAS_BACKEND")
        if before is not None:
            os.environ["KERAS_BACKEND"] = before


def prepare(quick: bool) -> dict[str, Path]:
    """Train and save both workloads (on TensorFlow) and their hand-written files."""
    from predict_bench import run

    paths = {
        "tabular": WORK / "tabular" / "1",
        "image": WORK / "image" / "1",
        "images": WORK / "images.npy",
        "hand_tabular": WORK / "hand_tabular",
        "hand_image": WORK / "hand_image",
    }
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with keras_backend("tensorflow"):
        run(TRAIN_TABULAR.format(here=str(HERE), root=str(paths["tabular"].parent)))
        run(TRAIN_IMAGE.format(root=str(paths["image"].parent), images=str(paths["images"])))
        for kind in ("tabular", "image"):
            paths[f"hand_{kind}"].mkdir(parents=True)
            run(HAND_SAVE.format(bundle=str(paths[kind]), hand=str(paths[f"hand_{kind}"])))
    return paths


def measure(backend: str, kind: str, paths: dict[str, Path], quick: bool) -> dict:
    from predict_bench import run

    n_rows = {"tabular": 100_000, "image": 5_000}[kind] if not quick else 1_000
    code = MEASURE.format(
        here=str(HERE),
        hand_load=HAND_LOAD.format(hand=str(paths[f"hand_{kind}"])),
        kind=kind,
        images=str(paths["images"]),
        bundle=str(paths[kind]),
        n_rows=n_rows,
        n_calls=200 if not quick else 30,
        rounds=3 if not quick else 1,
        torch_compile=not quick,
    )
    with keras_backend(backend):
        result = json.loads(run(code).strip().splitlines()[-1])
    assert result["backend"] == backend, result
    return {**result, "n_rows": n_rows}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def rounds(w: dict) -> str:
    values = [o / h for o, h in zip(w["bundle_rps_runs"], w["hand_rps_runs"], strict=True)]
    shown = f" (rounds {', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else ""
    return f"{statistics.median(values):.1f}x{shown}"


def render(results: dict) -> str:
    lines = [
        f"## {SECTION}",
        "",
        f"Measured {results['date']} on {results['machine']} by "
        "`benchmarks/backends_bench.py`: one fresh process per backend and workload, "
        "keras-bundle against the hand-written pipeline (joblib + `keras.saving.load_model` + "
        "`transform` + `model.predict` + `inverse_transform`) on the same backend, in the same "
        "process. Both workloads were saved once, on TensorFlow.",
        "",
        "| backend | workload | single-row p50 bundle / hand | ratio | rows/s bundle / "
        "hand | ratio (median of alternating rounds) | same labels |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, workloads in results["backends"].items():
        for kind, w in workloads.items():
            lines.append(
                f"| {LABELS[backend]} | {kind} | {w['bundle_p50']:.2f} / {w['hand_p50']:.2f} ms"
                f" | {ratio(w['hand_p50'], w['bundle_p50'])} faster | "
                f"{w['bundle_rps']:,.0f} / {w['hand_rps']:,.0f} at {w['n_rows']:,} rows | "
                f"{rounds(w)} | {w['same_labels']:.2%} |"
            )
    torch = results["backends"].get("torch", {})
    if torch and "compile_first_s" in next(iter(torch.values())):
        lines += [
            "",
            "`torch.compile` of the Keras model on PyTorch (not used by keras-bundle) against "
            "the same model called eagerly in inference mode (what keras-bundle runs), the "
            "model alone on preprocessed input, same chunks:",
            "",
            "| workload | first call (compiles) | single-row p50 compiled / eager | "
            "rows/s compiled / eager |",
            "|---|---|---|---|",
        ]
        for kind, w in torch.items():
            lines.append(
                f"| {kind} | {w['compile_first_s']:.1f} s | {w['compile_p50']:.2f} / "
                f"{w['eager_p50']:.2f} ms | {w['compile_rps']:,.0f} / {w['eager_rps']:,.0f} |"
            )
    missing = [LABELS[b] for b in BACKENDS if b not in results["backends"]]
    if missing:
        lines += ["", f"Not installed, not measured: {', '.join(missing)}."]
    before, after = results["load"]
    lines += [
        "",
        f"Load average (1 min) {before:.1f} before and {after:.1f} after the run, on 2 CPUs "
        "shared with other work.",
    ]
    return "\n".join(lines) + "\n"


def machine() -> str:
    return _report.machine_line(
        ("tensorflow-cpu", "jax", "jaxlib", "torch", "keras", "scikit-learn", "numpy")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; do not write")
    parser.add_argument(
        "--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS, help="which ones"
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    paths = prepare(args.quick)
    measured: dict[str, dict] = {}
    for backend in args.backends:
        if not installed(backend):
            print(f"{backend} is not installed: skipped", file=sys.stderr)
            continue
        measured[backend] = {
            kind: measure(backend, kind, paths, args.quick) for kind in ("tabular", "image")
        }
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "backends": measured,
        "load": [load_before, os.getloadavg()[0]],
    }
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    text = render(results)
    print(text)
    if not args.quick:
        _report.write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
