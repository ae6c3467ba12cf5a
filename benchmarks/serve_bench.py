"""Serving benchmark: `bundle serve` (REST and gRPC) vs MLServer vs `mlflow models serve`.

Same model, same rows, same run. Every server serves the reference tabular workload
(benchmarks/workloads.py: ColumnTransformer + Dense 256-128-64-3 + LabelEncoder):

- keras-bundle: the saved bundle (``bundle.serve.run``, one worker), one-row requests to
  ``POST /predict`` (JSON records), ``POST /v2/models/reference/infer`` (V2 JSON) and gRPC
  ``ModelInfer`` (typed contents);
- MLServer: the same fitted parts in a custom runtime (benchmarks/mlserver_runtime.py), with
  adaptive batching (``max_batch_size`` 256, ``max_batch_time`` 2 ms) and without, over V2
  JSON and gRPC; its other settings are its defaults (one inference worker process);
- MLflow: ``mlflow models serve --env-manager local -w 1``, ``POST /invocations``.

All servers stay up for the run. Closed loop: for each round, each concurrency level
(1, 8, 32, 128) and each target in a rotating order, N clients send requests back to back
(keep-alive) until a request count or a duration is reached; the figures are the medians of
the rounds. Open loop (the MLPerf server scenario): requests arrive as a Poisson process at
a fixed rate (no request waits on the client side for another), and the latency-bounded
figure is the highest rate whose p99 stays under 20 ms (rates doubled, then bisected).

The load generators (a minimal asyncio HTTP/1.1 client with precomputed bodies; grpc.aio
sending pre-serialized requests) share the machine with the servers.

Re-run it with one command, on an otherwise idle machine (~30 min on 2 cores):

    make bench-serve      # installs the bench extra (MLServer, mlflow), runs this, writes
                          # RESULTS.md's Serving section; progress in benchmarks/serve_bench.log

Usage:
    python benchmarks/serve_bench.py                 # full run; writes benchmarks/RESULTS.md
    python benchmarks/serve_bench.py --quick         # a smoke run (few requests, one round)
    python benchmarks/serve_bench.py --no-write --no-mlflow --concurrency 1,32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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
START_TIMEOUT_S = 240
CLIENT_TIMEOUT_S = 30
P99_BOUND_MS = 20.0
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
BUNDLE = "keras-bundle"
MLSERVER_BATCHED = "MLServer batched"


# --------------------------------------------------------------------------- results


@dataclass
class Level:
    """One target at one concurrency level in one round."""

    target: str
    concurrency: int
    round: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    p999_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return (float("nan"),) * 3
    array = np.asarray(latencies) * 1000
    p50, p99, p999 = np.percentile(array, [50, 99, 99.9])
    return float(p50), float(p99), float(p999)


# --------------------------------------------------------------------------- HTTP client


class _Connection:
    """One keep-alive HTTP/1.1 connection: send precomputed requests, read whole responses."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
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


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One way of asking one server: HTTP bodies or serialized gRPC requests."""

    name: str
    kind: str  # "http" or "grpc"
    port: int
    payloads: list[bytes]

    def caller(self) -> tuple[Callable[[bytes], Awaitable[bool]], Callable[[], Awaitable[None]]]:
        """``(call(payload) -> ok, close())`` for one client of this target."""
        if self.kind == "grpc":
            import grpc

            channel = grpc.aio.insecure_channel(f"{HOST}:{self.port}")
            method = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out

            async def call_grpc(payload: bytes) -> bool:
                try:
                    await method(payload, timeout=CLIENT_TIMEOUT_S)
                    return True
                except grpc.aio.AioRpcError:
                    return False

            return call_grpc, channel.close
        connection = _Connection(self.port)

        async def call_http(payload: bytes) -> bool:
            try:
                status, _ = await asyncio.wait_for(
                    connection.request(payload), timeout=CLIENT_TIMEOUT_S
                )
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                await connection.close()
                return False
            return status == 200

        return call_http, connection.close


async def closed_loop(
    target: Target, concurrency: int, max_requests: int, max_seconds: float
) -> tuple[list[float], int, float]:
    """`concurrency` clients sending back to back: (latencies, errors, seconds)."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    shared = target.caller() if target.kind == "grpc" else None  # one HTTP/2 channel

    async def client() -> None:
        nonlocal sent, errors
        call, close = shared or target.caller()
        try:
            while sent < max_requests and time.perf_counter() < deadline:
                payload = target.payloads[sent % len(target.payloads)]
                sent += 1
                begun = time.perf_counter()
                ok = await call(payload)
                latencies.append(time.perf_counter() - begun)
                errors += not ok
        finally:
            if shared is None:
                await close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    if shared is not None:
        await shared[1]()
    return latencies, errors, time.perf_counter() - started


async def open_loop(
    target: Target, rate: float, seconds: float, seed: int = 0
) -> tuple[list[float], int]:
    """Poisson arrivals at `rate` per second for `seconds`: (latencies, errors).

    A request never waits on the client side for an earlier one (HTTP: a new connection
    when all are busy; gRPC: one multiplexed channel), so each latency, counted from the
    moment the request is sent, is the server's alone (no coordinated omission).
    """
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    idle: list[Any] = []
    callers: list[Any] = []
    shared = target.caller() if target.kind == "grpc" else None

    async def one(index: int) -> None:
        nonlocal errors
        if shared is not None:
            call = shared[0]
        elif idle:
            call = idle.pop()
        else:
            callers.append(target.caller())
            call = callers[-1][0]
        begun = time.perf_counter()
        ok = await call(target.payloads[index % len(target.payloads)])
        latencies.append(time.perf_counter() - begun)
        errors += not ok
        if shared is None:
            idle.append(call)

    tasks = []
    start = at = time.perf_counter()
    index = 0
    while at - start < seconds:
        at += rng.expovariate(rate)
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(index)))
        index += 1
    await asyncio.gather(*tasks)
    for _, close in [*callers, *([shared] if shared else [])]:
        await close()
    return latencies, errors


def latency_bound_rate(target: Target, args: argparse.Namespace) -> tuple[float, float]:
    """Highest Poisson rate (req/s) whose p99 stays under P99_BOUND_MS, and that p99.

    Rates double from ``--open-start`` until the bound breaks, then bisect. ``(0, p99)``
    when even the first rate breaks it (p99 at that rate).
    """

    def p99_at(rate: float) -> float:
        latencies, errors = asyncio.run(open_loop(target, rate, args.open_seconds))
        return float("inf") if errors else percentiles(latencies)[1]

    low, low_p99, rate = 0.0, float("nan"), args.open_start
    first_p99 = None
    while rate <= args.open_max:
        p99 = p99_at(rate)
        first_p99 = p99 if first_p99 is None else first_p99
        if p99 >= P99_BOUND_MS:
            break
        low, low_p99, rate = rate, p99, rate * 2
    high = rate
    for _ in range(args.open_steps):  # between the last good and the first bad rate
        if low == 0 or high > args.open_max:
            break
        middle = (low + high) / 2
        p99 = p99_at(middle)
        if p99 < P99_BOUND_MS:
            low, low_p99 = middle, p99
        else:
            high = middle
    return (low, low_p99) if low else (0.0, first_p99 if first_p99 is not None else low_p99)


# --------------------------------------------------------------------------- requests


def v2_inputs(row: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = []
    for name, value in row.items():
        datatype = "BYTES" if isinstance(value, str) else "FP64"
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    return inputs


def v2_body(row: dict[str, Any]) -> dict[str, Any]:
    # Labels only, as the other servers answer.
    return {"inputs": v2_inputs(row), "outputs": [{"name": "predictions"}]}


def predict_body(row: dict[str, Any]) -> dict[str, Any]:
    return {"records": [row]}


def mlflow_body(row: dict[str, Any]) -> dict[str, Any]:
    return {"dataframe_records": [row]}


def http_target(
    name: str, port: int, path: str, rows: list[dict[str, Any]], body: Callable[[dict], Any]
) -> Target:
    """A target POSTing ``body(row)`` as JSON to `path`, one precomputed request per row."""
    payloads = [http_post(port, path, json.dumps(body(row)).encode()) for row in rows]
    return Target(name, "http", port, payloads)


def grpc_request(row: dict[str, Any], model: str) -> bytes:
    """A serialized ModelInferRequest with typed contents, as tritonclient-style clients send."""
    from bundle.serve._proto import open_inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, value in row.items():
        tensor = request.inputs.add(name=name, shape=[1])
        if isinstance(value, str):
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.append(value.encode())
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(float("nan") if value is None else value)
    request.outputs.add(name="predictions")
    return request.SerializeToString()


def first_label(target: Target, payloads: list[bytes]) -> list[str]:
    """The predicted label of each payload, one request each (the agreement check)."""

    async def collect() -> list[str]:
        out = []
        if target.kind == "grpc":
            import grpc

            from bundle.serve._proto import open_inference_pb2 as pb

            async with grpc.aio.insecure_channel(f"{HOST}:{target.port}") as channel:
                method = channel.unary_unary(MODEL_INFER)
                for payload in payloads:
                    response = pb.ModelInferResponse.FromString(await method(payload))
                    if response.raw_output_contents:  # 4-byte length, then the label
                        out.append(response.raw_output_contents[0][4:].decode())
                    else:
                        out.append(response.outputs[0].contents.bytes_contents[0].decode())
            return out
        connection = _Connection(target.port)
        try:
            for payload in payloads:
                status, data = await connection.request(payload)
                if status != 200:
                    raise RuntimeError(f"{target.name}: HTTP {status}: {data[:500]!r}")
                answer = json.loads(data)
                if "outputs" in answer:
                    out.append(answer["outputs"][0]["data"][0])
                elif "predictions" in answer:
                    out.append(answer["predictions"][0])
                else:
                    out.append(answer[0] if isinstance(answer, list) else str(answer))
        finally:
            await connection.close()
        return out

    return asyncio.run(collect())


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PortTaken(RuntimeError):
    """A server could not bind its port: another process took it after `free_port`."""


def start_on_free_ports(
    start: Callable[[dict[str, int]], subprocess.Popen], names: tuple[str, ...], attempts: int = 3
) -> tuple[subprocess.Popen, dict[str, int]]:
    """``start(ports)`` on fresh free ports, again on new ones if another process took one.

    The machine is shared: a port free when asked may be bound by anyone before the server
    binds it.
    """
    for attempt in range(attempts):
        ports = {name: free_port() for name in names}
        try:
            return start(ports), ports
        except PortTaken:
            if attempt == attempts - 1:
                raise
            print(f"a port of {ports} was taken meanwhile: starting again", flush=True)
    raise AssertionError("unreachable")


def wait_http(port: int, path: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-3000:]
            taken = re.search(r"in use|failed to bind", tail, re.I)
            raise (PortTaken if taken else RuntimeError)(
                f"server exited with {process.returncode}:\n{tail}"
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


def stop_group(process: subprocess.Popen) -> None:
    """Stop a server and the processes it started (it leads its own session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 -- the process owns it until it exits
    return subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env or _env(),
        start_new_session=True,
    )


def start_bundle_server(path: Path, port: int, grpc_port: int, log: Path, args) -> Any:
    code = (
        "from bundle.serve import run; "
        f"run({str(path)!r}, host={HOST!r}, port={port}, grpc_port={grpc_port}, trusted=True, "
        f"max_batch_size={args.max_batch_size}, max_wait_ms={args.max_wait_ms}, "
        "log_level='warning')"
    )
    process = _spawn([sys.executable, "-c", code], log)
    wait_http(port, "/v2/health/ready", process, log)
    return process


def start_mlserver(parts: Path, work: Path, ports: dict[str, int], log: Path) -> Any:
    """One MLServer with two models: the runtime with adaptive batching, and without."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(
        json.dumps(
            {
                "http_port": ports["http"],
                "grpc_port": ports["grpc"],
                "metrics_port": ports["metrics"],
                "host": HOST,
                "debug": False,
            }
        )
    )
    for name, batching in (("reference", True), ("reference-unbatched", False)):
        folder = work / name
        folder.mkdir(exist_ok=True)
        settings: dict[str, Any] = {
            "name": name,
            "implementation": "mlserver_runtime.ReferenceRuntime",
            "parameters": {"uri": str(parts)},
        }
        if batching:
            settings.update(max_batch_size=256, max_batch_time=0.002)
        (folder / "model-settings.json").write_text(json.dumps(settings))
    env = _env()
    env["PYTHONPATH"] = str(HERE)  # mlserver_runtime.py
    mlserver = str(Path(sys.executable).parent / "mlserver")
    process = _spawn([mlserver, "start", str(work)], log, env)
    for name in ("reference", "reference-unbatched"):
        wait_http(ports["http"], f"/v2/models/{name}/ready", process, log)
    return process


def start_mlflow_server(model_dir: Path, port: int, log: Path) -> Any:
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
    process = _spawn(command, log)
    wait_http(port, "/ping", process, log)
    return process


def _env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


# --------------------------------------------------------------------------- per-request cost


def request_cost(bundle_dir: Path, rows: Any, rounds: int, calls: int) -> list[str]:
    """Bundle.predict on one row in each raw form, alternating rounds; and the server's steps.

    Returns the report's lines: each form's median time per call and its ratio to the
    one-row DataFrame, then where one V2 JSON request's time goes inside the server.
    """
    from bundle import Bundle

    loaded = Bundle.load(bundle_dir, trusted=True)
    records = json.loads(rows.to_json(orient="records"))
    frames = [rows.iloc[i : i + 1].reset_index(drop=True) for i in range(len(rows))]
    forms: dict[str, Callable[[int], Any]] = {
        "one-row DataFrame": lambda i: frames[i],
        "JSON records `[{...}]`": lambda i: [records[i]],
        "one row `{column: value}`": lambda i: records[i],
        "columns `{column: [value]}`": lambda i: {k: [v] for k, v in records[i].items()},
    }
    times: dict[str, list[float]] = {name: [] for name in forms}
    for make in forms.values():  # warm every path up
        for i in range(50):
            loaded.predict(make(i % len(records)))
    for round_ in range(rounds):
        order = list(forms)[round_ % len(forms) :] + list(forms)[: round_ % len(forms)]
        for name in order:
            make = forms[name]
            started = time.perf_counter()
            for i in range(calls):
                loaded.predict(make(i % len(records)))
            times[name].append((time.perf_counter() - started) / calls * 1000)
    base = statistics.median(times["one-row DataFrame"])
    lines = [
        "| `Bundle.predict` on one row, as | ms per call (median of rounds) | vs DataFrame |",
        "|---|---:|---:|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.3f} | {median / base:.2f}x |")
    lines += ["", *_server_steps(loaded, records)]
    return lines


def _server_steps(loaded: Any, records: list[dict[str, Any]]) -> list[str]:
    """Median time of each step of one V2 JSON request inside the server (in-process)."""
    from bundle.serve.protocol import output_tensor, parse_json, read_tensor
    from bundle.serve.service import Service

    service = Service(
        loaded, max_batch_size=256, max_wait_ms=0, max_queue_rows=1024, max_body_bytes=1 << 20,
        registry=None,
    )  # fmt: skip
    served = service.served
    bodies = [json.dumps(v2_body(r)).encode() for r in records]
    engine = loaded._get_engine()
    steps: dict[str, list[float]] = {}
    empty = memoryview(b"")

    def timed(name: str, function: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = function()
        steps.setdefault(name, []).append((time.perf_counter() - started) * 1e6)
        return result

    def tensors_of(request: Any) -> dict[str, Any]:
        return {name: array for name, array, _ in (read_tensor(s, empty, 0) for s in request)}

    for i in range(2000):
        body = bodies[i % len(bodies)]
        request = timed("parse the JSON body", lambda body=body: parse_json(memoryview(body)))
        tensors = timed("read the input tensors", lambda r=request: tensors_of(r["inputs"]))
        payload = timed(
            "tensors -> the batcher's columns",
            lambda t=tensors: service.payload(served.raw_from_tensors(t), strict=True),
        )
        raw = payload.raw
        canonical = timed(
            "input contract (coerce)", lambda raw=raw: loaded.input_schema.coerce(raw)
        )
        prepared = timed("preprocessing (NumPy replay)", lambda c=canonical: engine.prepare(c))
        scores = timed("model (traced graph)", lambda p=prepared: engine.infer(p))
        labels = timed("postprocessing (labels)", lambda s=scores: engine.postprocess(s))
        timed(
            "answer (output tensor, JSON)",
            lambda labels=labels: json.dumps(
                {"outputs": [output_tensor("predictions", labels, binary=False)[0]]}
            ),
        )
    lines = [
        "| step of one V2 JSON request (in-process) | µs (median) |",
        "|---|---:|",
    ]
    total = 0.0
    for name, values in steps.items():
        median = statistics.median(values)
        total += median
        lines.append(f"| {name} | {median:.0f} |")
    lines.append(f"| **sum** | **{total:.0f}** |")
    return lines


# --------------------------------------------------------------------------- report


def render(
    levels: list[Level],
    bounded: dict[str, tuple[float, float]],
    cost: list[str],
    args: argparse.Namespace,
    notes: list[str],
) -> str:
    machine = _report.machine_line(
        (
            "keras-bundle",
            "tensorflow-cpu",
            "keras",
            "scikit-learn",
            "numpy",
            "pandas",
            "starlette",
            "uvicorn",
            "grpcio",
            "mlserver",
            "mlflow",
        )
    )
    smoke = (
        [
            "**Smoke run** (`--quick`: one round, few requests, a short open loop) on a "
            "shared machine: it shows the benchmark works, not figures to quote. The "
            "figures come from a full run on an idle machine (`make bench-serve`).",
            "",
        ]
        if args.quick
        else []
    )
    lines = [
        f"## {SECTION}",
        "",
        *smoke,
        "Re-run: `make bench-serve` (the bench extra installs MLServer and mlflow; about 30 "
        "min on 2 cores, on an otherwise idle machine).",
        "",
        f"`python benchmarks/serve_bench.py` ({time.strftime('%Y-%m-%d')}; {machine}). "
        "Reference tabular workload (benchmarks/workloads.py: ColumnTransformer, Dense "
        "256-128-64-3, LabelEncoder), one-row requests over loopback, each level bounded by "
        f"{args.requests:,} requests or {args.duration:g} s, medians of {args.rounds} "
        "alternating round(s). keras-bundle: `bundle.serve.run` (1 worker, "
        f"max_batch_size={args.max_batch_size}, max_wait_ms={args.max_wait_ms:g}); `/predict` "
        "JSON records, V2 JSON and gRPC typed contents, labels only. MLServer: a custom "
        "runtime with the same fitted parts (benchmarks/mlserver_runtime.py), adaptive "
        "batching on (max_batch_size 256, max_batch_time 2 ms) and off, its defaults "
        "otherwise. MLflow: `mlflow models serve --env-manager local -w 1`.",
        "",
        "| concurrency | target | req/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    summary = _medians(levels)
    for (concurrency, target), row in sorted(summary.items()):
        lines.append(
            f"| {concurrency} | {target} | {row['rps']:,.0f} | {row['p50']:.2f} | "
            f"{row['p99']:.2f} | {row['p999']:.2f} | {row['errors']} |"
        )
    lines += ["", *_targets(summary), ""]
    if bounded:
        lines += [
            f"Latency-bounded throughput: the highest Poisson arrival rate whose p99 stays "
            f"under {P99_BOUND_MS:g} ms ({args.open_seconds:g} s per rate; rates doubled from "
            f"{args.open_start:g}/s, then bisected {args.open_steps} times):",
            "",
            "| target | req/s at p99 < 20 ms | p99 there |",
            "|---|---:|---:|",
        ]
        for target, (rate, p99) in bounded.items():
            shown = f"{rate:,.0f}" if rate else f"< {args.open_start:g}"
            where = f"{p99:.1f} ms" + ("" if rate else f" at {args.open_start:g}/s")
            lines.append(f"| {target} | {shown} | {where} |")
        lines.append("")
    if cost:
        lines += ["Per-request cost (in the benchmark's process, before the servers start):", ""]
        lines += [*cost, ""]
    lines += [*notes, ""]
    return "\n".join(lines)


def _medians(levels: list[Level]) -> dict[tuple[int, str], dict[str, Any]]:
    grouped: dict[tuple[int, str], list[Level]] = {}
    for level in levels:
        grouped.setdefault((level.concurrency, level.target), []).append(level)
    return {
        key: {
            "rps": statistics.median(lv.rps for lv in group),
            "p50": statistics.median(lv.p50_ms for lv in group),
            "p99": statistics.median(lv.p99_ms for lv in group),
            "p999": statistics.median(lv.p999_ms for lv in group),
            "errors": sum(lv.errors for lv in group),
        }
        for key, group in grouped.items()
    }


def _targets(summary: dict[tuple[int, str], dict[str, Any]]) -> list[str]:
    """The issue's targets at concurrency 32, as measured here."""
    ours = [t for c, t in summary if c == 32 and t.startswith(BUNDLE)]
    theirs = summary.get((32, f"{MLSERVER_BATCHED} V2 JSON"))
    if not ours:
        return []
    lines = [
        "Targets at concurrency 32 (p99 <= 3x p50; p99 below MLServer batched's; req/s >= "
        "1.5x MLServer batched's, V2 JSON):",
        "",
    ]
    for target in sorted(ours):
        row = summary[(32, target)]
        text = f"- {target}: p99/p50 {row['p99'] / row['p50']:.1f}x"
        text += " (met)" if row["p99"] <= 3 * row["p50"] else " (missed)"
        if theirs:
            met = row["p99"] < theirs["p99"]
            text += (
                f"; p99 {row['p99']:.1f} vs {theirs['p99']:.1f} ms ({'met' if met else 'missed'})"
            )
            ratio = row["rps"] / theirs["rps"]
            text += f"; req/s {ratio:.1f}x ({'met' if ratio >= 1.5 else 'missed'})"
        lines.append(text)
    return lines


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32,128", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--requests", type=int, default=4000, help="requests per level, at most")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level, at most")
    parser.add_argument("--warmup", type=int, default=200, help="requests before each level")
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--no-open-loop", action="store_true", help="skip the latency bound")
    parser.add_argument("--no-cost", action="store_true", help="skip the per-request cost")
    parser.add_argument("--open-seconds", type=float, default=8.0)
    parser.add_argument("--open-start", type=float, default=100.0)
    parser.add_argument("--open-max", type=float, default=20_000.0)
    parser.add_argument("--open-steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.duration, args.warmup, args.rounds = 300, 3.0, 20, 1
        args.open_seconds, args.open_steps, args.open_max = 2.0, 0, 800.0
    levels_wanted = [int(c) for c in args.concurrency.split(",")]

    load_before = _loadavg()
    print("building the reference workload (20k rows) ...", flush=True)
    workload = reference_tabular()
    rows = workload.holdout(1000)
    records = json.loads(rows.to_json(orient="records"))  # NaN -> null, as a client sends

    levels: list[Level] = []
    bounded: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    cost: list[str] = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        tmp_path = Path(tmp)
        bundle_dir = workload.save_bundle(tmp_path / "bundle" / "reference")
        if not args.no_cost:
            print("per-request cost ...", flush=True)
            cost = request_cost(bundle_dir, rows.iloc[:200], args.rounds * 2, 400)
            print("\n".join(cost), flush=True)
        running: list[subprocess.Popen] = []
        targets: list[Target] = []
        try:
            process, ports = start_on_free_ports(
                lambda p: start_bundle_server(
                    bundle_dir, p["http"], p["grpc"], tmp_path / "bundle.log", args
                ),
                ("http", "grpc"),
            )
            running.append(process)
            targets += [
                http_target(f"{BUNDLE} /predict", ports["http"], "/predict", records, predict_body),
                http_target(
                    f"{BUNDLE} V2 JSON",
                    ports["http"],
                    "/v2/models/reference/infer",
                    records,
                    v2_body,
                ),
                Target(
                    f"{BUNDLE} gRPC",
                    "grpc",
                    ports["grpc"],
                    [grpc_request(r, "reference") for r in records],
                ),
            ]
            if not args.no_mlserver:
                from mlserver_runtime import save_parts

                parts = save_parts(workload, tmp_path / "parts")
                process, ml = start_on_free_ports(
                    lambda p: start_mlserver(
                        parts, tmp_path / "mlserver", p, tmp_path / "mlserver.log"
                    ),
                    ("http", "grpc", "metrics"),
                )
                running.append(process)
                for model, label in (
                    ("reference", MLSERVER_BATCHED),
                    ("reference-unbatched", "MLServer unbatched"),
                ):
                    path = f"/v2/models/{model}/infer"
                    targets.append(
                        http_target(f"{label} V2 JSON", ml["http"], path, records, v2_body)
                    )
                    targets.append(
                        Target(
                            f"{label} gRPC",
                            "grpc",
                            ml["grpc"],
                            [grpc_request(r, model) for r in records],
                        )
                    )
            if not args.no_mlflow:
                model_dir = save_mlflow_model(workload, tmp_path / "mlflow", rows.iloc[:50])
                process, ports_ = start_on_free_ports(
                    lambda p: start_mlflow_server(model_dir, p["http"], tmp_path / "mlflow.log"),
                    ("http",),
                )
                running.append(process)
                port = ports_["http"]
                targets.append(
                    http_target("mlflow /invocations", port, "/invocations", records, mlflow_body)
                )
            labels = {t.name: first_label(t, t.payloads[:100]) for t in targets}
            reference = labels[f"{BUNDLE} /predict"]
            agreement = {
                name: float(np.mean(np.asarray(got) == np.asarray(reference)))
                for name, got in labels.items()
            }
            notes.append(
                "Agreement with keras-bundle's labels on the first 100 rows: "
                + ", ".join(f"{name} {share:.0%}" for name, share in agreement.items())
                + " (same fitted parts)."
            )
            for round_ in range(args.rounds):
                for concurrency in levels_wanted:
                    shift = (round_ + concurrency) % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        asyncio.run(
                            closed_loop(target, min(concurrency, 4), args.warmup, args.duration)
                        )
                        latencies, errors, seconds = asyncio.run(
                            closed_loop(target, concurrency, args.requests, args.duration)
                        )
                        level = Level(
                            target.name,
                            concurrency,
                            round_,
                            len(latencies),
                            errors,
                            seconds,
                            *percentiles(latencies),
                        )
                        levels.append(level)
                        print(
                            f"round {round_} {target.name:>26} c={concurrency:<3} "
                            f"{level.rps:7.0f} req/s  p50 {level.p50_ms:7.2f}  "
                            f"p99 {level.p99_ms:7.2f}  p99.9 {level.p999_ms:7.2f} ms  "
                            f"errors {errors}",
                            flush=True,
                        )
            if not args.no_open_loop:
                for target in targets:
                    if target.name.startswith("mlflow"):
                        continue  # far below the bound's useful range; skipped for time
                    bounded[target.name] = latency_bound_rate(target, args)
                    rate, p99 = bounded[target.name]
                    print(f"latency bound {target.name:>26}: {rate:,.0f} req/s (p99 {p99:.1f} ms)")
        finally:
            for process in running:
                stop_group(process)
    notes.append(
        f"Load average (1 min) before / after the run: {load_before} / {_loadavg()}, on "
        f"{os.cpu_count()} CPUs (the load generator runs on the same machine): figures are "
        "only as quiet as the machine was."
    )
    text = render(levels, bounded, cost, args, notes)
    print()
    print(text)
    if not args.no_write:
        _report.write_section(SECTION, text, RESULTS)
        print(f"\nwrote the {SECTION!r} section of {RESULTS}")
    return 0


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
