"""Drift benchmark: `bundle drift` on the 5M-row reference Parquet file, and live drift in serving.

Three measurements of the reference tabular workload (benchmarks/workloads.py), one run:

1. ``bundle drift BUNDLE FILE`` on 5,000,000 rows (the prediction benchmark's file: 8 numeric
   and 4 string columns), with the model's outputs and with ``--no-outputs``: wall time and
   peak RSS of the whole command in a fresh process. The alternatives users would pick are
   measured in the same run when they work here: Evidently and whylogs (tried in a child
   process; neither imports beside pandas 3 today, which the report says), and the
   hand-written check (pandas reads the whole file, scipy's ks_2samp and a numpy PSI per
   column), which is what a team writes without a tool.
2. The cost of counting a served batch in the live drift window, per row, by batch size.
3. ``bundle serve`` throughput with live drift on and off: two servers (``drift_window=600``
   and ``0``), started afresh each round, take turns at each concurrency level; the ratio is
   the median over rounds (target: at most 5% lower with drift on).

Usage:
    python benchmarks/drift_bench.py            # full run; writes benchmarks/RESULTS.md
    python benchmarks/drift_bench.py --quick    # a smoke run: 500k rows, short levels
    python benchmarks/drift_bench.py --serving-only --rounds 9 --levels 32   # prints only
    python benchmarks/drift_bench.py --serving-only --aa   # two drift-off servers: the noise
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from serve_bench import HOST, Target, closed_loop, free_port, wait_http  # noqa: E402

WORK = HERE / "_work" / "drift"
SECTION = "Drift"
VERSIONS = ("tensorflow-cpu", "keras", "numpy", "pandas", "pyarrow", "scipy", "starlette")

MAKE_FILE = """
import sys; sys.path.insert(0, {here!r})
import pyarrow as pa, pyarrow.parquet as pq
from workloads import reference_frame
writer = None
for i in range(max({n} // 250_000, 1)):
    frame = reference_frame(min(250_000, {n}), seed=100 + i)[0]
    if i % 2:  # half the file drifts: a unit change in one column, a new category in another
        frame["num_4"] = frame["num_4"] * 2.5
        frame.loc[frame.index[:25_000], "cat_b"] = "cat_b_new"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    writer = writer or pq.ParquetWriter({path!r}, table.schema)
    writer.write_table(table)
writer.close()
"""

BY_HAND = """
import json, sys, time
import numpy as np, pandas as pd
from scipy.stats import ks_2samp
sys.path.insert(0, {here!r})
from workloads import NUMERIC, CATEGORICAL, reference_frame
train = reference_frame(20_000)[0]
frame = pd.read_parquet({path!r})
result = {{}}
for column in NUMERIC:
    ref, cur = train[column].dropna().to_numpy(), frame[column].dropna().to_numpy()
    edges = np.unique(np.quantile(ref, np.linspace(0.1, 0.9, 9)))
    bins = np.concatenate([[-np.inf], edges, [np.inf]])
    e = np.maximum(np.histogram(ref, bins)[0] / len(ref), 1e-4)
    a = np.maximum(np.histogram(cur, bins)[0] / len(cur), 1e-4)
    result[column] = (float(np.sum((a - e) * np.log(a / e))), float(ks_2samp(ref, cur).statistic))
for column in CATEGORICAL:
    e = train[column].value_counts(normalize=True)
    a = frame[column].value_counts(normalize=True)
    both = e.index.union(a.index)
    e, a = e.reindex(both, fill_value=1e-4), a.reindex(both, fill_value=1e-4)
    result[column] = float(np.sum((a - e) * np.log(a / e)))
print(json.dumps(result))
"""

# Tried 2026-12-04 in scratch virtualenvs beside this project's stack (pandas 3.1, NumPy 2.4):
# both install, neither imports, so neither is in the bench extra.
NOT_INSTALLED = {
    "evidently": "Evidently 0.7.23 installs but does not import beside pandas 3 "
    "(ImportError: infer_dtype_from_object, removed from pandas)",
    "whylogs": "whylogs 1.6.4 installs but fails on its first log beside NumPy 2 "
    "(np.unicode_, removed in NumPy 2.0)",
}

TRY_EVIDENTLY = """
from evidently import Report
from evidently.presets import DataDriftPreset
"""

TRY_WHYLOGS = """
import whylogs
"""


def child(code: str, timeout: int = 3600, ok: tuple[int, ...] = (0,)) -> tuple[float, float, str]:
    """Run `code` in a fresh interpreter: (seconds, peak RSS in MiB, stdout)."""
    return command([sys.executable, "-c", textwrap.dedent(code)], timeout=timeout, ok=ok)


def command(
    args: list[str], timeout: int = 3600, ok: tuple[int, ...] = (0, 1)
) -> tuple[float, float, str]:
    """Run a command: (seconds, peak RSS in MiB of the process, stdout).

    Raises RuntimeError for an exit code not in `ok` (`bundle drift` exits 1 on drift).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                raise TimeoutError(f"{args[:3]} ran over {timeout} s")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        raise RuntimeError(f"{args[:3]} failed with {code}:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def build_bundle(directory: Path) -> Path:
    """Train and save the reference workload in a child process: this process stays small,
    so the peak RSS of the processes it starts is theirs alone (a forked child's high-water
    mark would include the parent's memory)."""
    code = f"""
    import sys
    sys.path.insert(0, {str(HERE)!r})
    from workloads import reference_tabular
    workload = reference_tabular()
    # The profile: the 20,000 training rows.
    print(workload.save_bundle({str(directory / "reference")!r}, profile_data=workload.frame))
    """
    return Path(child(code)[2].strip().splitlines()[-1])


def measure_file(bundle_dir: Path, n: int, rounds: int) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"drift_{n}.parquet"
    if not path.exists():
        print(f"writing {n:,} rows to {path} ...", flush=True)
        child(MAKE_FILE.format(here=str(HERE), n=n, path=str(path)))
    cli = str(Path(sys.executable).with_name("bundle"))
    runs: dict[str, list[tuple[float, float]]] = {"outputs": [], "inputs": [], "hand": []}
    report = None
    for _ in range(rounds):  # alternating rounds: load changes hit every variant alike
        seconds, rss, out = command([cli, "drift", str(bundle_dir), str(path), "--json"])
        runs["outputs"].append((seconds, rss))
        report = json.loads(out)
        seconds, rss, _ = command(
            [cli, "drift", str(bundle_dir), str(path), "--json", "--no-outputs"]
        )
        runs["inputs"].append((seconds, rss))
        seconds, rss, _ = child(BY_HAND.format(here=str(HERE), path=str(path)))
        runs["hand"].append((seconds, rss))
    alternatives = {}
    for name, code in (("evidently", TRY_EVIDENTLY), ("whylogs", TRY_WHYLOGS)):
        try:
            child(code, timeout=600)
            alternatives[name] = "imports here, but its run is not written yet"
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1]
            if "No module named" in reason:
                reason = NOT_INSTALLED[name]
            alternatives[name] = f"not measured: {reason}"
    return {
        "rows": n,
        "runs": runs,
        "drifted": report["drifted_features"] if report else [],
        "alternatives": alternatives,
    }


def measure_observe(bundle_dir: Path) -> list[tuple[int, float, float]]:
    """(batch rows, µs per row to count it, µs per row to predict it)."""
    code = f"""
    import json, sys, time
    sys.path.insert(0, {str(HERE)!r})
    from workloads import reference_frame
    from bundle import Bundle
    from bundle.serve.drift import LiveDrift
    bundle = Bundle.load({str(bundle_dir)!r})
    live = LiveDrift(bundle)
    records = json.loads(reference_frame(4096, seed=5)[0].to_json(orient="records"))
    out = []
    for n in (1, 8, 64, 256):
        # What the server's batch worker holds: the merged request columns, as lists.
        columns = {{key: [r[key] for r in records[:n]] for key in records[0]}}
        scores = bundle.predict(columns, postprocess=False)
        labels = bundle.decode(scores)
        reps = max(64, 8192 // n)
        best_observe = best_predict = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(reps):
                live.observe(columns, scores, labels, n)
            live.flush()
            best_observe = min(best_observe, (time.perf_counter() - start) / reps / n)
            start = time.perf_counter()
            for _ in range(max(reps // 8, 8)):
                bundle.predict(columns)
            best_predict = min(best_predict, (time.perf_counter() - start) / max(reps // 8, 8) / n)
        out.append((n, best_observe * 1e6, best_predict * 1e6))
    print(json.dumps(out))
    """
    return json.loads(child(code)[2].strip().splitlines()[-1])


def closed_loop_rate(
    port: int, bodies: list[bytes], concurrency: int, max_requests: int, max_seconds: float
) -> tuple[float, int]:
    """Requests/s and failed requests of `concurrency` clients sending back to back."""
    target = Target("drift", "http", port, bodies)
    asyncio.run(closed_loop(target, min(concurrency, 4), 50, max_seconds))  # warm-up
    latencies, errors, seconds = asyncio.run(
        closed_loop(target, concurrency, max_requests, max_seconds)
    )
    return (len(latencies) / seconds if seconds else 0.0), errors


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def start_server(bundle_dir: Path, port: int, log: Path, drift_window: float):
    code = (
        "from bundle.serve import run; "
        f"run({str(bundle_dir)!r}, host={HOST!r}, port={port}, max_wait_ms=2.0, "
        f"drift_window={drift_window}, grpc_port=None, log_level='warning')"
    )
    handle = open(log, "w")  # noqa: SIM115 -- closed when the process is reaped
    process = subprocess.Popen([sys.executable, "-c", code], stdout=handle, stderr=handle)
    wait_http(port, "/v2/health/ready", process, log)
    return process


SERVERS = (("drift on", 600.0), ("drift off", 0.0))
# An A/A run: two servers alike. Their spread is what the on/off ratio cannot resolve.
SERVERS_AA = (("drift on", 0.0), ("drift off", 0.0))


def measure_serving(bundle_dir: Path, args: argparse.Namespace, tmp: Path) -> dict:
    """Requests/s of each server per concurrency and round.

    Both servers are started afresh every round: two server processes alike differ by a
    few percent (memory layout, thread placement), which alternating turns within one pair
    of processes would never average out.
    """
    import urllib.request

    from serve_bench import http_post
    from workloads import reference_frame

    rows = reference_frame(1000, seed=9)[0]
    records = json.loads(rows.to_json(orient="records"))  # NaN -> null, as a client sends
    results: dict[tuple[str, int], list[float]] = {}
    window_rows = 0
    for round_ in range(args.rounds):
        servers = {}
        try:
            for name, window in SERVERS_AA if args.aa else SERVERS:
                port = free_port()
                log = tmp / f"{name}.log"
                servers[name] = (start_server(bundle_dir, port, log, window), port)
            for concurrency in args.levels:
                # Which server goes first alternates by round: no order effect favours one.
                order = list(servers.items())[:: 1 if round_ % 2 == 0 else -1]
                for name, (_, port) in order:
                    bodies = [
                        http_post(port, "/predict", json.dumps({"records": [r]}).encode())
                        for r in records
                    ]
                    rps, errors = closed_loop_rate(
                        port, bodies, concurrency, args.requests, args.duration
                    )
                    if errors:
                        raise RuntimeError(f"{name}: {errors} failed requests")
                    results.setdefault((name, concurrency), []).append(rps)
                    print(f"  {name:>9} c={concurrency:<3} {rps:8.0f} req/s", flush=True)
            if not args.aa:
                on_port = servers["drift on"][1]
                url = f"http://{HOST}:{on_port}/drift"
                with urllib.request.urlopen(url, timeout=30) as answer:
                    window_rows = json.loads(answer.read())["rows"]
        finally:
            for process, _ in servers.values():
                stop(process)
    return {"rps": results, "window_rows": window_rows}


def render(file: dict, observe: list, serving: dict, args: argparse.Namespace) -> str:
    date = time.strftime("%Y-%m-%d")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    busy = os.getloadavg()[1] > (os.cpu_count() or 1)
    lines = [
        f"## {SECTION}",
        "",
        f"`python benchmarks/drift_bench.py{' --quick' if args.quick else ''}` ({date}). "
        f"Machine: {_report.machine_line(VERSIONS)}. Load average (1/5/15 min) at the end: "
        f"{load}; the machine is shared, so absolute figures move with its load."
        + (
            " **It was busy (load above its cores): re-run on a quiet machine before "
            "quoting these figures.**"
            if busy
            else ""
        ),
        "",
        f"### `bundle drift` on {file['rows']:,} rows (reference Parquet file)",
        "",
        "Half the file drifts (`num_4` x2.5, a new `cat_b` category in 10% of those rows). The "
        "bundle's profile: the 20,000 training rows. Each variant is a fresh process (wall time, "
        f"peak RSS); median of {len(file['runs']['outputs'])} alternating round(s).",
        "",
        "| run | seconds | rows/s | peak RSS MiB |",
        "|---|---:|---:|---:|",
    ]
    names = {
        "outputs": "`bundle drift` (inputs + model outputs: scores all rows)",
        "inputs": "`bundle drift --no-outputs` (inputs only)",
        "hand": "by hand: pandas reads the file, scipy ks_2samp + numpy PSI per column",
    }
    for key, label in names.items():
        seconds = statistics.median(s for s, _ in file["runs"][key])
        rss = statistics.median(r for _, r in file["runs"][key])
        lines.append(f"| {label} | {seconds:.1f} | {file['rows'] / seconds:,.0f} | {rss:,.0f} |")
    lines += [
        "",
        f"Drifted features found: {', '.join(file['drifted']) or 'none'}.",
        "Evidently: "
        + file["alternatives"]["evidently"]
        + ". whylogs: "
        + file["alternatives"]["whylogs"]
        + ".",
        "",
        "### Live drift: the cost of counting a served batch",
        "",
        "`LiveDrift.observe` + flush of merged request columns (JSON records of the reference "
        "workload: 12 input features, 4 output features), best of 3; `Bundle.predict` of the "
        "same columns for scale.",
        "",
        "| batch rows | counting µs/row | predict µs/row |",
        "|---:|---:|---:|",
    ]
    for n, observe_us, predict_us in observe:
        lines.append(f"| {n} | {observe_us:.1f} | {predict_us:.1f} |")
    lines += [
        "",
        "### `bundle serve` throughput, live drift on vs off",
        "",
        "One-row `POST /predict` requests over keep-alive loopback connections; both servers "
        "started afresh each round, taking turns per level (which goes first alternates by "
        "round); "
        f"{args.rounds} round(s) of at most "
        f"{args.requests:,} requests or {args.duration:g} s per level. Ratio: the median over "
        "rounds of on/off requests/s.",
        "",
        "| concurrency | drift off req/s | drift on req/s | on / off |",
        "|---:|---:|---:|---:|",
    ]
    rps = serving["rps"]
    for concurrency in args.levels:
        off, on = rps[("drift off", concurrency)], rps[("drift on", concurrency)]
        ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
        lines.append(
            f"| {concurrency} | {statistics.median(off):,.0f} | {statistics.median(on):,.0f} | "
            f"{ratio:.3f} |"
        )
    lines.append(
        f"\nThe drift-on server's window held {serving['window_rows']:,} rows at the end of the "
        "last round."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--serving-only", action="store_true", help="only the drift on/off serving rounds"
    )
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds")
    parser.add_argument(
        "--aa",
        action="store_true",
        help="with --serving-only: two drift-off servers (the benchmark's own noise)",
    )
    parser.add_argument(
        "--levels",
        type=lambda text: [int(level) for level in text.split(",")],
        default=[1, 8, 32],
        help="client concurrencies for the serving rounds, comma-separated (1,8,32)",
    )
    args = parser.parse_args(argv)
    if args.aa and not args.serving_only:
        parser.error("--aa measures the serving rounds only: add --serving-only")
    n = 500_000 if args.quick else 5_000_000
    args.rounds = args.rounds or (1 if args.quick else 3)
    # Enough requests at every level for seconds of load (3,000 lasted under a second at 32).
    args.requests, args.duration = (300, 4.0) if args.quick else (40_000, 8.0)
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        tmp_path = Path(tmp)
        print("building the reference workload and its bundle ...", flush=True)
        bundle_dir = build_bundle(tmp_path)
        if args.serving_only:
            serving = measure_serving(bundle_dir, args, tmp_path)
            for (name, concurrency), values in sorted(serving["rps"].items()):
                print(name, concurrency, [round(v) for v in values])
            return 0
        print("bundle drift on the file ...", flush=True)
        file = measure_file(bundle_dir, n, args.rounds)
        print("counting cost ...", flush=True)
        observe = measure_observe(bundle_dir)
        print("serving, drift on/off ...", flush=True)
        serving = measure_serving(bundle_dir, args, tmp_path)
    text = render(file, observe, serving, args)
    print(text)
    if not args.no_write:
        _report.write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
