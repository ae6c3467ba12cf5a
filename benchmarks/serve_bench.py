"""Serving benchmark: `bundle serve` vs `mlflow models serve`, same model, same rows, same run.

A bounded loopback load test. For each server and each concurrency level (default 1, 8,
32), N client connections send one-row JSON requests back to back (keep-alive) until a
fixed request count or a fixed duration is reached, whichever comes first; the script
reports p50/p99 latency and requests/s, and the ratios of keras-bundle over MLflow.

Both servers serve the reference tabular workload (benchmarks/workloads.py): keras-bundle
the saved bundle (``bundle.serve.run``, one worker); MLflow a pyfunc wrapping the same
fitted ColumnTransformer, Keras model and LabelEncoder, logged with an input signature,
served by ``mlflow models serve --env-manager local`` (one worker). Both servers stay up
on 127.0.0.1 and take turns at each level, never loaded at once; the load generator is a
minimal asyncio HTTP/1.1 client (keep-alive, precomputed bodies), so the client costs little
CPU on the same machine.

Usage:
    python benchmarks/serve_bench.py                 # full run; writes benchmarks/RESULTS.md
    python benchmarks/serve_bench.py --quick         # a smoke run (few requests)
    python benchmarks/serve_bench.py --no-write      # print only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from workloads import reference_tabular, save_mlflow_model  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "Serving"
HOST = "127.0.0.1"
START_TIMEOUT_S = 180
CLIENT_TIMEOUT_S = 30


# --------------------------------------------------------------------------- load generator


@dataclass
class Level:
    """One server at one concurrency level."""

    server: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class _Connection:
    """One keep-alive HTTP/1.1 connection: send precomputed requests, read whole responses."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(part[:-2] for part in parts)
        else:
            raise RuntimeError(f"response without a length: {headers}")
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def http_post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _load(
    port: int, requests: list[bytes], concurrency: int, max_requests: int, max_seconds: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    counter = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client(index: int) -> None:
        nonlocal counter, errors
        connection = _Connection(port)
        try:
            while counter < max_requests and time.perf_counter() < deadline:
                data = requests[counter % len(requests)]
                counter += 1
                sent = time.perf_counter()
                try:
                    status, _ = await asyncio.wait_for(
                        connection.request(data), timeout=CLIENT_TIMEOUT_S
                    )
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                    errors += 1
                    await connection.close()
                    continue
                latencies.append(time.perf_counter() - sent)
                if status != 200:
                    errors += 1
        finally:
            await connection.close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def measure(
    name: str,
    port: int,
    requests: list[bytes],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    warmup: int,
) -> Level:
    asyncio.run(_load(port, requests, min(concurrency, 4), warmup, max_seconds))
    latencies, errors, seconds = asyncio.run(
        _load(port, requests, concurrency, max_requests, max_seconds)
    )
    array = np.asarray(latencies) * 1000
    return Level(
        server=name,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        p50_ms=float(np.percentile(array, 50)) if len(array) else float("nan"),
        p99_ms=float(np.percentile(array, 99)) if len(array) else float("nan"),
    )


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_http(port: int, path: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                if b" 200 " in sock.recv(256):
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_bundle_server(path: Path, port: int, log: Path, args: argparse.Namespace):
    code = (
        "from bundle.serve import run; "
        f"run({str(path)!r}, host={HOST!r}, port={port}, trusted=True, "
        f"max_batch_size={args.max_batch_size}, max_wait_ms={args.max_wait_ms}, "
        "log_level='warning')"
    )
    handle = open(log, "w")  # noqa: SIM115 -- closed when the process is reaped
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=handle, stderr=subprocess.STDOUT, env=_env()
    )
    wait_http(port, "/v2/health/ready", process, log)
    return process


def start_mlflow_server(model_dir: Path, port: int, log: Path):
    handle = open(log, "w")  # noqa: SIM115
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
        "-w",
        "1",
    ]
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
    )
    wait_http(port, "/ping", process, log)
    return process


def stop_group(process: subprocess.Popen) -> None:
    """mlflow starts uvicorn as a child: signal the whole session it leads."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _report.cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _report.versions_line(
            (
                "keras-bundle",
                "tensorflow-cpu",
                "keras",
                "scikit-learn",
                "numpy",
                "pandas",
                "starlette",
                "uvicorn",
                "mlflow",
            )
        ),
    }


def render(levels: list[Level], args: argparse.Namespace, facts: dict[str, Any]) -> str:
    info = machine()
    ours = {level.concurrency: level for level in levels if level.server == "keras-bundle"}
    theirs = {level.concurrency: level for level in levels if level.server == "mlflow"}
    v2 = {level.concurrency: level for level in levels if level.server == "keras-bundle v2"}
    lines = [
        f"## {SECTION}",
        "",
        f"`python benchmarks/serve_bench.py` ({time.strftime('%Y-%m-%d')}): one-row JSON "
        "requests over keep-alive loopback connections, each level bounded by "
        f"{args.requests:,} requests or {args.duration:g} s. Reference tabular workload "
        "(benchmarks/workloads.py: 20k training rows, 8 numeric + 4 string columns, "
        "ColumnTransformer, Dense 256-128-64-3, LabelEncoder). keras-bundle: `bundle.serve.run`"
        f" (1 worker, max_batch_size={args.max_batch_size}, max_wait_ms={args.max_wait_ms:g}) "
        '`POST /predict` with `{"records": [row]}`'
        + (" and `POST /v2/models/reference/infer` (JSON tensors)" if v2 else "")
        + "; MLflow: `mlflow models serve --env-manager local -w 1` `POST /invocations` with "
        '`{"dataframe_records": [row]}`, a pyfunc wrapping the same fitted ColumnTransformer, '
        "Keras model (predict_on_batch) and LabelEncoder, logged with an input signature. "
        "Both servers stay up for the run and take turns at each concurrency level (never "
        "loaded at the same time); the load generator shares the machine.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"{info['platform']}.",
        f"Versions: {info['versions']}.",
        "",
        "| concurrency | server | requests/s | p50 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for level in sorted(levels, key=lambda lv: (lv.concurrency, lv.server)):
        lines.append(
            f"| {level.concurrency} | {level.server} | {level.rps:,.0f} | {level.p50_ms:.2f} | "
            f"{level.p99_ms:.2f} | {level.errors} |"
        )
    lines += [
        "",
        "Ratios, keras-bundle `/predict` over MLflow (throughput: higher is better; "
        "p99: lower is better):",
        "",
        "| concurrency | requests/s ratio | p50 ratio | p99 ratio |",
        "|---:|---:|---:|---:|",
    ]
    for concurrency in sorted(ours):
        if concurrency in theirs:
            a, b = ours[concurrency], theirs[concurrency]
            lines.append(
                f"| {concurrency} | {a.rps / b.rps:.1f}x | {a.p50_ms / b.p50_ms:.2f} | "
                f"{a.p99_ms / b.p99_ms:.2f} |"
            )
    lines += ["", *facts.get("notes", []), ""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others alone."""
    _report.write_section(SECTION, text, RESULTS)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--requests", type=int, default=3000, help="requests per level, at most")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level, at most")
    parser.add_argument("--warmup", type=int, default=100, help="requests before each level")
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--no-mlflow", action="store_true", help="measure keras-bundle only")
    parser.add_argument("--no-v2", action="store_true", help="skip the V2 infer endpoint")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.duration, args.warmup = 200, 5.0, 20
    levels_wanted = [int(c) for c in args.concurrency.split(",")]

    load_before = _loadavg()
    print("building the reference workload (20k rows) ...", flush=True)
    workload = reference_tabular()
    rows = workload.holdout(1000)
    records = json.loads(rows.to_json(orient="records"))  # NaN -> null, as a client sends

    levels: list[Level] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        tmp_path = Path(tmp)
        bundle_dir = workload.save_bundle(tmp_path / "bundle" / "reference")
        servers: list[tuple[str, Any]] = [("keras-bundle", None)]
        if not args.no_mlflow:
            mlflow_dir = save_mlflow_model(workload, tmp_path / "mlflow", rows.iloc[:50])
            servers.append(("mlflow", mlflow_dir))

        answers: dict[str, list[Any]] = {}
        running: list[tuple[subprocess.Popen, Any]] = []
        targets: list[tuple[str, int, list[bytes]]] = []
        try:
            # Both servers are up for the whole run (an idle one costs no CPU), and the
            # targets take turns at each concurrency level, so a change in the machine's
            # load during the run does not favour whichever server happened to go first.
            for name, _ in servers:
                port = free_port()
                log = tmp_path / f"{name}.log"
                if name == "keras-bundle":
                    running.append((start_bundle_server(bundle_dir, port, log, args), stop))
                    routes = [("keras-bundle", "/predict", lambda r: {"records": [r]})]
                    if not args.no_v2:
                        routes.append(("keras-bundle v2", "/v2/models/reference/infer", _v2_body))
                else:
                    running.append((start_mlflow_server(mlflow_dir, port, log), stop_group))
                    routes = [("mlflow", "/invocations", lambda r: {"dataframe_records": [r]})]
                for label, path, make in routes:
                    bodies = [http_post(port, path, json.dumps(make(r)).encode()) for r in records]
                    answers[label] = _answers(port, bodies[:200], label)
                    targets.append((label, port, bodies))
            for concurrency in levels_wanted:
                for label, port, bodies in targets:
                    level = measure(
                        label,
                        port,
                        bodies,
                        concurrency,
                        args.requests,
                        args.duration,
                        args.warmup,
                    )
                    levels.append(level)
                    print(
                        f"{label:>16} c={concurrency:<3} {level.rps:8.0f} req/s  "
                        f"p50 {level.p50_ms:7.2f} ms  p99 {level.p99_ms:7.2f} ms  "
                        f"errors {level.errors}",
                        flush=True,
                    )
        finally:
            for process, stopper in running:
                stopper(process)
        if "mlflow" in answers:
            same = np.mean(np.asarray(answers["keras-bundle"]) == np.asarray(answers["mlflow"]))
            notes.append(
                f"Both servers agree on {same:.1%} of the first 200 rows' predicted labels "
                "(same fitted parts; keras-bundle replays the ColumnTransformer natively)."
            )
    notes.append(
        f"Load average (1 min) before / after the run: {load_before} / {_loadavg()}, on "
        f"{os.cpu_count()} CPUs: the figures are only as quiet as the machine was."
    )
    text = render(levels, args, {"notes": notes})
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"\nwrote the {SECTION!r} section of {RESULTS}")
    return 0


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def _v2_body(row: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    for name, value in row.items():
        datatype = "BYTES" if isinstance(value, str) else "FP64"
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs}


def _answers(port: int, bodies: list[bytes], label: str) -> list[Any]:
    """The predicted labels for the first rows, one request each (for the agreement check)."""

    async def collect() -> list[Any]:
        connection = _Connection(port)
        out = []
        try:
            for body in bodies:
                status, data = await asyncio.wait_for(connection.request(body), CLIENT_TIMEOUT_S)
                if status != 200:
                    raise RuntimeError(f"{label}: HTTP {status}: {data[:500]!r}")
                answer = json.loads(data)
                if "outputs" in answer:
                    out.append(answer["outputs"][0]["data"][0])
                else:
                    out.append(answer["predictions"][0])
        finally:
            await connection.close()
        return out

    return asyncio.run(collect())


if __name__ == "__main__":
    sys.exit(main())
