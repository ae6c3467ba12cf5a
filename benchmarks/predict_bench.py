"""Prediction benchmarks: keras-bundle vs the hand-written pipeline, in the same run.

The hand-written pipeline is what teams write without keras-bundle: ``joblib.load`` of the
fitted scikit-learn steps, ``keras.saving.load_model`` with the custom loss passed by hand,
``transform`` + ``model.predict`` + ``inverse_transform``. Every figure is measured for both
in this run and reported as a ratio.

Workloads (fixed seeds): the reference tabular workload of benchmarks/workloads.py, trained
with a custom loss defined in the training script's ``__main__``; and 64x64x3 uint8 images
with scaling and per-channel standardization (Keras layers) in front of a small conv net.

Usage:
    python benchmarks/predict_bench.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/predict_bench.py --quick    # small sizes, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402

WORK = HERE / "_work" / "predict"
RESULTS = HERE / "RESULTS.md"
SECTION = "Prediction"

TRAIN_TABULAR = r'''
import sys, joblib, numpy as np, keras
sys.path.insert(0, {here!r})
from workloads import reference_tabular
from bundle import Bundle

def focal_crossentropy(y_true, y_pred):
    """A custom loss defined in __main__, as training scripts do."""
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

work = reference_tabular(epochs=1)
work.model.compile("adam", loss=focal_crossentropy)
features = work.preprocess.transform(work.frame)
work.model.fit(features, work.labels.transform(work.target), epochs=1, batch_size=256, verbose=0)
Bundle(work.model, preprocess=work.preprocess, postprocess=work.labels,
       input_example=work.frame.iloc[:200], name="tabular", version="1").save({root!r})
'''

TRAIN_IMAGE = r"""
import numpy as np, keras
from bundle import Bundle
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(2000, 64, 64, 3), dtype=np.uint8)
labels = (images[..., 0].mean(axis=(1, 2)) > images[..., 2].mean(axis=(1, 2))).astype("int64")
keras.utils.set_random_seed(0)
norm = keras.layers.Normalization(axis=-1)
norm.adapt(images[:500].astype("float32") / 255.0)
model = keras.Sequential([
    keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255.0), norm,
    keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
    keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
    keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(images.astype("float32"), labels, epochs=1, batch_size=64, verbose=0)
Bundle(model, input_example=images[:32], name="image", version="1").save({root!r})
np.save({images!r}, images[:256])
"""

# The hand-written pipeline: the files a team keeps next to each other, and the glue.
HAND_SAVE = r"""
import json, tempfile, time, joblib, keras
from bundle import Bundle
b = Bundle.load({bundle!r}, trusted=True)
def hand_save():
    b.model.save({hand!r} + "/model.keras")
    if b.preprocess:
        joblib.dump(b.preprocess[0], {hand!r} + "/preprocess.joblib")
    if b.postprocess:
        joblib.dump(b.postprocess[0], {hand!r} + "/labels.joblib")
t = time.perf_counter(); hand_save(); hand_s = time.perf_counter() - t
again = Bundle(b.model, preprocess=list(b.preprocess), postprocess=list(b.postprocess),
               input_example=b._example, name="again")
t = time.perf_counter(); again.save(tempfile.mkdtemp()); bundle_s = time.perf_counter() - t
print(json.dumps({{"bundle_save_s": bundle_s, "hand_save_s": hand_s}}))
"""

HAND_LOAD = r"""
import joblib, keras, numpy as np, os
def focal_crossentropy(y_true, y_pred):
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
model = keras.saving.load_model({hand!r} + "/model.keras",
                                custom_objects={{"focal_crossentropy": focal_crossentropy}})
def maybe(name):
    path = os.path.join({hand!r}, name)
    return joblib.load(path) if os.path.exists(path) else None
pre, labels = maybe("preprocess.joblib"), maybe("labels.joblib")
def hand_predict(raw, batch_size=32):
    x = pre.transform(raw) if pre is not None else raw
    x = x.toarray() if hasattr(x, "toarray") else x
    scores = model.predict(x, verbose=0, batch_size=batch_size)
    return labels.inverse_transform(scores.argmax(axis=1)) if labels is not None else scores
"""


def run(code: str, *, timeout: int = 3600) -> str:
    return _report.run_child(code, timeout=timeout)


def timed_child(code: str) -> tuple[float, dict]:
    """Wall time of a fresh process, and the JSON it printed last."""
    start = time.perf_counter()
    out = run(code)
    elapsed = time.perf_counter() - start
    return elapsed, json.loads(out.strip().splitlines()[-1])


def prepare(quick: bool) -> tuple[dict[str, Path], dict[str, dict]]:
    WORK.mkdir(parents=True, exist_ok=True)
    paths = {
        "tabular": WORK / "tabular" / "1",
        "image": WORK / "image" / "1",
        "images": WORK / "images.npy",
        "hand_tabular": WORK / "hand_tabular",
        "hand_image": WORK / "hand_image",
    }
    import shutil

    for key in ("tabular", "image", "hand_tabular", "hand_image"):
        shutil.rmtree(
            paths[key].parent if key in ("tabular", "image") else paths[key], ignore_errors=True
        )
    run(TRAIN_TABULAR.format(here=str(HERE), root=str(paths["tabular"].parent)))
    run(TRAIN_IMAGE.format(root=str(paths["image"].parent), images=str(paths["images"])))
    saves = {}
    for kind in ("tabular", "image"):
        paths[f"hand_{kind}"].mkdir(parents=True)
        out = run(HAND_SAVE.format(bundle=str(paths[kind]), hand=str(paths[f"hand_{kind}"])))
        saves[kind] = json.loads(out.strip().splitlines()[-1])
    return paths, saves


LATENCY = r"""
import json, sys, time, numpy as np
sys.path.insert(0, {here!r})
from bundle import Bundle
{hand_load}
def rows(n):
    if {kind!r} == "tabular":
        from workloads import reference_frame
        return reference_frame(n, seed=1)[0]
    images = np.load({images!r})
    return images[np.arange(n) % len(images)]
b = Bundle.load({bundle!r}, trusted=True)
one = rows(1)
many = rows({n_rows})
def lat(fn, n):
    for _ in range(20): fn()
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return float(np.percentile(out, 50) * 1e3), float(np.percentile(out, 99) * 1e3)
res = {{}}
res["bundle_p50"], res["bundle_p99"] = lat(lambda: b.predict(one), {n_calls})
res["hand_p50"], res["hand_p99"] = lat(lambda: hand_predict(one), {n_calls})
def once(fn):
    t = time.perf_counter(); fn(); return {n_rows} / (time.perf_counter() - t)
def thr(fn):
    fn(); return once(fn)
# The headline ratio: alternating rounds, so a burst of load on the shared machine hits
# one round of each rather than all of one side.
b.predict(many); hand_predict(many)
res["bundle_rps_runs"], res["hand_rps_runs"] = [], []
for _ in range({rounds}):
    res["bundle_rps_runs"].append(once(lambda: b.predict(many)))
    res["hand_rps_runs"].append(once(lambda: hand_predict(many)))
res["bundle_rps"] = float(np.median(res["bundle_rps_runs"]))
res["hand_rps"] = float(np.median(res["hand_rps_runs"]))
res["hand_rps_b8192"] = thr(lambda: hand_predict(many, batch_size=8192))
engine = b._get_engine()
for key, overlap in (("bundle_rps_overlap", True), ("bundle_rps_no_overlap", False)):
    engine.overlap = overlap
    res[key] = thr(lambda: b.predict(many))
if b.preprocess:
    from bundle.steps import Preprocessor
    compiled = engine.preprocess
    engine.preprocess = Preprocessor(b.preprocess, fast=False)  # scikit-learn's transform
    for key, overlap in (("sklearn_rps_overlap", True), ("sklearn_rps_no_overlap", False)):
        engine.overlap = overlap
        res[key] = thr(lambda: b.predict(many))
    engine.preprocess = compiled
engine.overlap = None
ref = b.predict(many, postprocess=False)
for p in ("float16", "bfloat16"):
    got = b.predict(many, postprocess=False, precision=p)
    res[p + "_max_abs"] = float(np.abs(got - ref).max())
    res[p + "_agree"] = float((got.argmax(-1) == ref.argmax(-1)).mean())
    res[p + "_rps"] = thr(lambda: b.predict(many, precision=p))
if b.preprocess:
    from bundle.steps import Preprocessor
    fast, slow = Preprocessor(b.preprocess), Preprocessor(b.preprocess, fast=False)
    assert fast.is_fast
    canon1, canonN = b.input_schema.coerce(one), b.input_schema.coerce(many)
    res["pre_fast_1_ms"] = lat(lambda: fast(canon1), {n_calls})[0]
    res["pre_sklearn_1_ms"] = lat(lambda: slow(canon1), {n_calls})[0]
    res["pre_fast_n_s"] = {n_rows} / thr(lambda: fast(canonN))
    res["pre_sklearn_n_s"] = {n_rows} / thr(lambda: slow(canonN))
    res["pre_max_abs"] = float(np.abs(fast(canonN) - slow(canonN)).max())
print(json.dumps(res))
"""

COLD_BUNDLE = r"""
import json, sys, time
sys.path.insert(0, {here!r})
{make_one}
from bundle import Bundle
print(json.dumps({{"first": str(Bundle.load({bundle!r}, trusted=True).predict(one)[:1])}}))
"""
COLD_HAND = r"""
import json, sys
sys.path.insert(0, {here!r})
{make_one}
{hand_load}
print(json.dumps({{"first": str(hand_predict(one)[:1])}}))
"""

RSS_BUNDLE = r"""
import json, resource
from bundle import Bundle
b = Bundle.load({bundle!r}, trusted=True)
n = b.predict_file({src!r}, {dst!r})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"rows": n, "peak_mib": peak}}))
"""
RSS_HAND = r"""
import json, resource, pandas as pd
{hand_load}
frame = pd.read_parquet({src!r})
out = pd.DataFrame({{"prediction": hand_predict(frame, batch_size=8192)}})
out.to_parquet({dst!r})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"rows": len(out), "peak_mib": peak}}))
"""


def make_one_code(kind: str, images: Path) -> str:
    if kind == "tabular":
        return "from workloads import reference_frame\none = reference_frame(1, seed=1)[0]"
    return f"import numpy as np\none = np.load({str(images)!r})[:1]"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(kind: str, paths: dict[str, Path], quick: bool) -> dict:
    hand_load = HAND_LOAD.format(hand=str(paths[f"hand_{kind}"]))
    n_rows = 100_000 if not quick else 5_000
    res = json.loads(
        run(
            LATENCY.format(
                here=str(HERE),
                hand_load=hand_load,
                kind=kind,
                images=str(paths["images"]),
                bundle=str(paths[kind]),
                n_rows=n_rows,
                n_calls=300 if not quick else 50,
                rounds=3 if not quick else 1,
            )
        )
        .strip()
        .splitlines()[-1]
    )
    res["n_rows"] = n_rows
    make_one = make_one_code(kind, paths["images"])
    colds_b, colds_h = [], []
    for _ in range(3 if not quick else 1):
        colds_b.append(
            timed_child(
                COLD_BUNDLE.format(here=str(HERE), make_one=make_one, bundle=str(paths[kind]))
            )[0]
        )
        colds_h.append(
            timed_child(COLD_HAND.format(here=str(HERE), make_one=make_one, hand_load=hand_load))[0]
        )
    res["bundle_cold_s"], res["hand_cold_s"] = min(colds_b), min(colds_h)
    res["bundle_size"] = dir_size(paths[kind])
    res["hand_size"] = dir_size(paths[f"hand_{kind}"])
    return res


def measure_rss(paths: dict[str, Path], quick: bool) -> dict:
    n = 5_000_000 if not quick else 200_000
    src = WORK / f"score_{n}.parquet"
    if not src.exists():
        run(
            f"""
            import sys; sys.path.insert(0, {str(HERE)!r})
            import pyarrow as pa, pyarrow.parquet as pq
            from workloads import reference_frame
            writer = None
            for i in range({n} // 500_000 or 1):
                frame = reference_frame(min(500_000, {n}), seed=100 + i)[0]
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter({str(src)!r}, table.schema)
                writer.write_table(table)
            writer.close()
            """
        )
    hand_load = HAND_LOAD.format(hand=str(paths["hand_tabular"]))
    forced = RSS_BUNDLE.replace(
        "b = Bundle.load({bundle!r}, trusted=True)",
        "b = Bundle.load({bundle!r}, trusted=True)\nb._get_engine().overlap = True",
    )
    t_forced, _ = timed_child(
        forced.format(bundle=str(paths["tabular"]), src=str(src), dst=str(WORK / "forced.parquet"))
    )
    t_b, bundle = timed_child(
        RSS_BUNDLE.format(
            bundle=str(paths["tabular"]), src=str(src), dst=str(WORK / "out_bundle.parquet")
        )
    )
    serial = RSS_BUNDLE.replace(
        "b = Bundle.load({bundle!r}, trusted=True)",
        "b = Bundle.load({bundle!r}, trusted=True)\nb._get_engine().overlap = False",
    )
    t_serial, _ = timed_child(
        serial.format(bundle=str(paths["tabular"]), src=str(src), dst=str(WORK / "serial.parquet"))
    )
    t_h, hand = timed_child(
        RSS_HAND.format(hand_load=hand_load, src=str(src), dst=str(WORK / "out_hand.parquet"))
    )
    return {
        "rows": n,
        "file_mib": src.stat().st_size / 2**20,
        "bundle_peak_mib": bundle["peak_mib"],
        "hand_peak_mib": hand["peak_mib"],
        "bundle_s": t_b,
        "bundle_s_no_overlap": t_serial,
        "bundle_s_overlap": t_forced,
        "hand_s": t_h,
    }


def machine() -> str:
    return _report.machine_line(("tensorflow-cpu", "keras", "scikit-learn", "numpy", "pandas"))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def round_ratios(w: dict) -> str:
    """The median of the rounds' throughput ratios, and each round's."""
    rounds = [o / h for o, h in zip(w["bundle_rps_runs"], w["hand_rps_runs"], strict=True)]
    shown = ", ".join(f"{r:.1f}" for r in rounds)
    median = f"{statistics.median(rounds):.1f}x higher (>= 3x"
    return median + (f"; rounds {shown})" if len(rounds) > 1 else ")")


def render(results: dict) -> str:
    t, i, r = results["tabular"], results["image"], results["rss"]
    lines = [
        f"## {SECTION}",
        "",
        f"Measured {results['date']} on {results['machine']} by `make bench` "
        "(`benchmarks/predict_bench.py`). Hand-written = joblib + `keras.saving.load_model` + "
        "`transform` + `model.predict` + `inverse_transform`, measured in the same run.",
        "",
        "| figure | workload | keras-bundle | hand-written | ratio (target) |",
        "|---|---|---|---|---|",
    ]
    for name, w in (("tabular", t), ("image", i)):
        lines += [
            f"| single-row p50 | {name} | {w['bundle_p50']:.2f} ms | {w['hand_p50']:.2f} ms | "
            f"{ratio(w['hand_p50'], w['bundle_p50'])} faster (>= 20x) |",
            f"| single-row p99 | {name} | {w['bundle_p99']:.2f} ms | {w['hand_p99']:.2f} ms | "
            f"{ratio(w['hand_p99'], w['bundle_p99'])} faster |",
            f"| rows/s at {w['n_rows']:,} rows (median of {len(w['bundle_rps_runs'])} "
            f"alternating rounds) | {name} | {w['bundle_rps']:,.0f} | "
            f"{w['hand_rps']:,.0f} (batch 8192: {w['hand_rps_b8192']:,.0f}) | "
            f"{round_ratios(w)} |",
            f"| cold start (fresh process to first prediction) | {name} | "
            f"{w['bundle_cold_s']:.2f} s | {w['hand_cold_s']:.2f} s | "
            f"{w['bundle_cold_s'] / w['hand_cold_s']:.2f}x of hand-written (<= 1.2x) |",
            f"| artifact size | {name} | {w['bundle_size'] / 1024:,.0f} KiB | "
            f"{w['hand_size'] / 1024:,.0f} KiB | {w['bundle_size'] / w['hand_size']:.2f}x |",
            f"| save time | {name} | {w['bundle_save_s']:.2f} s | {w['hand_save_s']:.2f} s | "
            f"{w['bundle_save_s'] / w['hand_save_s']:.1f}x |",
        ]
    lines += [
        f"| peak RSS scoring a {r['rows']:,}-row Parquet file ({r['file_mib']:.0f} MiB) | tabular"
        f" | {r['bundle_peak_mib']:,.0f} MiB | {r['hand_peak_mib']:,.0f} MiB | "
        f"{ratio(r['hand_peak_mib'], r['bundle_peak_mib'])} lower (< 1 GiB, >= 5x) |",
        f"| wall time for that file | tabular | {r['bundle_s']:.0f} s | {r['hand_s']:.0f} s | "
        f"{ratio(r['hand_s'], r['bundle_s'])} faster |",
        "",
        "Preprocessing alone (reference tabular ColumnTransformer, compiled NumPy replay vs "
        "`ColumnTransformer.transform`):",
        "",
        "| figure | compiled replay | scikit-learn | ratio (target) |",
        "|---|---|---|---|",
        f"| one row | {t['pre_fast_1_ms']:.3f} ms | {t['pre_sklearn_1_ms']:.3f} ms | "
        f"{ratio(t['pre_sklearn_1_ms'], t['pre_fast_1_ms'])} faster (>= 10x) |",
        f"| {t['n_rows']:,} rows | {t['pre_fast_n_s']:.3f} s | {t['pre_sklearn_n_s']:.3f} s | "
        f"{ratio(t['pre_sklearn_n_s'], t['pre_fast_n_s'])} faster (>= 3x) |",
        f"| max abs difference | {t['pre_max_abs']:.1e} | | |",
        "",
        "Overlapping preprocessing of chunk k+1 with inference of chunk k (tabular, "
        f"{t['n_rows']:,} rows, rows/s with / without): compiled replay "
        f"{t['bundle_rps_overlap']:,.0f} / {t['bundle_rps_no_overlap']:,.0f}; scikit-learn "
        f"transform {t['sklearn_rps_overlap']:,.0f} / {t['sklearn_rps_no_overlap']:,.0f}; "
        f"`predict_file` on the {r['rows']:,}-row file {r['bundle_s_overlap']:.1f} s / "
        f"{r['bundle_s_no_overlap']:.1f} s (forced on / off). By default keras-bundle overlaps "
        "only around scikit-learn's transform.",
        "",
        "Reduced precision (`predict(..., precision=...)`), against float32 on the same rows:",
        "",
        "| precision | workload | max abs score difference | same argmax | rows/s |",
        "|---|---|---|---|---|",
    ]
    for name, w in (("tabular", t), ("image", i)):
        for p in ("float16", "bfloat16"):
            lines.append(
                f"| {p} | {name} | {w[p + '_max_abs']:.1e} | {w[p + '_agree']:.2%} | "
                f"{w[p + '_rps']:,.0f} |"
            )
    if "load" in results:
        before, after = results["load"]
        lines += [
            "",
            f"Load average (1 min) {before:.1f} before and {after:.1f} after the run, on 2 "
            "CPUs shared with other work: single runs vary, so the throughput ratio is the "
            "median of alternating rounds.",
        ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others alone."""
    _report.write_section(SECTION, text, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; do not write")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    paths, saves = prepare(args.quick)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "tabular": {**measure("tabular", paths, args.quick), **saves["tabular"]},
        "image": {**measure("image", paths, args.quick), **saves["image"]},
        "rss": measure_rss(paths, args.quick),
    }
    results["load"] = [load_before, os.getloadavg()[0]]
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    text = render(results)
    print(text)
    if not args.quick:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
