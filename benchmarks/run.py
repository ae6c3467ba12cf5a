"""Run every benchmark in sequence and refresh benchmarks/RESULTS.md (`make bench`).

Each benchmark measures keras-bundle and the tool users would pick instead in the same run
and writes its own section of RESULTS.md. Run them on an otherwise idle machine: they
report ratios, but contention still skews latency percentiles.

Usage:
    python benchmarks/run.py                 # all of them
    python benchmarks/run.py predict serve   # some of them
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "predict": "predict_bench.py",  # issues 4 and 5: latency, throughput, memory, cold start
    "serve": "serve_bench.py",  # issues 7, 18: bundle serve vs MLServer and mlflow serve
    "spark": "spark_bench.py",  # issue 8: predict_udf / score vs mlflow spark_udf
    "export": "export_bench.py",  # issue 9: fused TensorFlow graph vs NumPy replay
    "drift": "drift_bench.py",  # issue 20: bundle drift on 5M rows, live drift on/off
    "load": "load_bench.py",  # issue 13: the cost of snapshot loads on a large model
    "oci": "oci_bench.py",  # issue 19: push/pull through a registry vs ORAS's SDK
    "save": "save_bench.py",  # issue 15: inference-only sizes, the cost of proving a save
    "backends": "backends_bench.py",  # issue 16: each Keras backend vs its model.predict
    "kinds": "kinds_bench.py",  # issue 14: replay of each new kind vs transform, parity
    "images": "images_bench.py",  # issue 17: bundle predict DIR vs tf.data / PIL pipelines
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        script = HERE / BENCHMARKS[name]
        if not script.exists():
            print(f"== {name}: {script.name} is missing, skipped")
            continue
        print(f"== {name}: {script.name}", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], check=False)
        print(f"== {name}: exit {result.returncode} in {time.perf_counter() - start:.0f} s")
        if result.returncode:
            failed.append(name)
    print(f"results: {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
