"""bundle.serve: real server processes on 127.0.0.1, real clients (tritonclient, httpx).

The Open Inference Protocol endpoints are exercised with tritonclient (the protocol's
reference client), the plain JSON endpoint with httpx. Every answer is compared with
``Bundle.predict`` on the same rows in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular_frame, run_python

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("uvicorn", reason="needs the 'serve' extra")
pytest.importorskip("prometheus_client", reason="needs the 'serve' extra")
httpx = pytest.importorskip("httpx", reason="needs the 'dev' extra")
triton = pytest.importorskip("tritonclient.http", reason="needs the 'dev' extra")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from bundle import Bundle, UnsafeLoadError  # noqa: E402

TIMEOUT = 30  # seconds, for every client call
START_TIMEOUT = 180  # a server process imports TensorFlow and loads the bundle
ATOL = 1e-6
pytestmark = pytest.mark.timeout(300)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=TIMEOUT)

    def triton(self, **options) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(
            f"127.0.0.1:{self.port}",
            connection_timeout=TIMEOUT,
            network_timeout=TIMEOUT,
            **options,
        )

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def metrics(self) -> dict[str, dict[tuple, float]]:
        with self.client() as client:
            text = client.get("/metrics").text
        values: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                values.setdefault(sample.name, {})[key] = sample.value
        return values

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_server(path: Path, log: Path, **options) -> Server:
    """Start ``bundle.serve.run`` in a fresh Python process (not yet waited for)."""
    port = free_port()
    arguments = ", ".join(f"{key}={value!r}" for key, value in options.items())
    code = f"from bundle.serve import run; run({str(path)!r}, port={port}, {arguments})"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    handle = open(log, "w")  # noqa: SIM115 -- the process owns it until it exits
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=handle, stderr=subprocess.STDOUT, env=env
    )
    return Server(process, port, log)


def wait_ready(server: Server, timeout: float = START_TIMEOUT) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"server not ready in {timeout} s:\n{server.log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def servers(tabular_bundle, image_bundle, tmp_path_factory):
    """Two servers started side by side: the tabular bundle's and the image bundle's."""
    logs = tmp_path_factory.mktemp("serve-logs")
    started = {
        "tabular": start_server(
            tabular_bundle[0], logs / "tabular.log", trusted=True, max_wait_ms=20.0
        ),
        "image": start_server(image_bundle[0], logs / "image.log", max_wait_ms=2.0),
    }
    try:
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def tabular_server(servers):
    return servers["tabular"]


@pytest.fixture(scope="module")
def image_server(servers):
    return servers["image"]


@pytest.fixture(scope="module")
def tabular(tabular_bundle):
    """The saved tabular bundle loaded in this process: the reference answers."""
    return Bundle.load(tabular_bundle[0], trusted=True)


@pytest.fixture(scope="module")
def image(image_bundle):
    return Bundle.load(image_bundle[0])


@pytest.fixture(scope="module")
def rows():
    frame, _ = make_tabular_frame(256, seed=7)
    return frame


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as a JSON client sends them (NaN as null)."""
    return json.loads(frame.to_json(orient="records"))


def tensor_inputs(frame: pd.DataFrame, *, binary: bool, two_d: bool = False) -> list:
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy()
        else:
            values = column.to_numpy(dtype=object)
        if two_d:
            values = values.reshape(-1, 1)
        datatype = "BYTES" if values.dtype == object else triton.np_to_triton_dtype(values.dtype)
        tensor = triton.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def text(array) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else str(item) for item in array]


# --------------------------------------------------------------------------- health, metadata


def test_health_and_server_metadata(tabular_server):
    client = tabular_server.triton()
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("churn")
        assert client.is_model_ready("churn", "1.0.0")
        assert not client.is_model_ready("churn", "2.0.0")
        metadata = client.get_server_metadata()
    finally:
        client.close()
    assert metadata["name"] == "keras-bundle"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_lists_columns_outputs_and_versions(tabular_server, tabular):
    client = tabular_server.triton()
    try:
        metadata = client.get_model_metadata("churn")
        by_version = client.get_model_metadata("churn", "1.0.0")
    finally:
        client.close()
    assert metadata == by_version
    assert metadata["name"] == "churn"
    assert metadata["versions"] == ["1.0.0"]
    inputs = {tensor["name"]: tensor for tensor in metadata["inputs"]}
    assert list(inputs) == ["age", "income", "score", "visits", "plan", "region"]
    assert inputs["age"] == {"name": "age", "datatype": "FP64", "shape": [-1]}
    assert inputs["visits"]["datatype"] == "INT64"
    assert inputs["plan"]["datatype"] == "BYTES"
    outputs = {tensor["name"]: tensor for tensor in metadata["outputs"]}
    assert outputs["predictions"] == {"name": "predictions", "datatype": "BYTES", "shape": [-1]}
    assert outputs["scores"] == {"name": "scores", "datatype": "FP32", "shape": [-1, 3]}


def test_image_metadata(image_server):
    client = image_server.triton()
    try:
        metadata = client.get_model_metadata("digits")
    finally:
        client.close()
    assert metadata["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 8, 8, 1]}]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 2]}]
    assert metadata["versions"] == ["3"]


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_infer_tabular_equals_bundle_predict(tabular_server, tabular, rows, binary):
    frame = rows.iloc[:40]
    outputs = [
        triton.InferRequestedOutput("predictions", binary_data=binary),
        triton.InferRequestedOutput("scores", binary_data=binary),
    ]
    client = tabular_server.triton()
    try:
        result = client.infer(
            "churn", tensor_inputs(frame, binary=binary), outputs=outputs, request_id="r-1"
        )
    finally:
        client.close()
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "1.0.0"
    assert text(result.as_numpy("predictions")) == list(tabular.predict(frame))
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (40, 3)
    np.testing.assert_allclose(scores, tabular.predict(frame, postprocess=False), atol=ATOL)


def test_v2_infer_defaults_to_predictions_only_and_takes_n_by_1_columns(
    tabular_server, tabular, rows
):
    frame = rows.iloc[40:50]
    client = tabular_server.triton()
    try:
        result = client.infer(
            "churn", tensor_inputs(frame, binary=False, two_d=True), model_version="1.0.0"
        )
    finally:
        client.close()
    names = [output["name"] for output in result.get_response()["outputs"]]
    assert names == ["predictions"]
    assert text(result.as_numpy("predictions")) == list(tabular.predict(frame))


def test_v2_infer_image_equals_bundle_predict(image_server, image, image_data):
    images, _ = image_data
    tensor = triton.InferInput("input", list(images[:9].shape), "UINT8")
    tensor.set_data_from_numpy(images[:9])
    client = image_server.triton()
    try:
        result = client.infer("digits", [tensor])
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("predictions"), image.predict(images[:9]), atol=ATOL)


def test_predict_records_columns_and_one_row(tabular_server, tabular, rows):
    frame = rows.iloc[50:80]
    expected = list(tabular.predict(frame))
    as_records = records(frame)
    columns = {name: [record[name] for record in as_records] for name in frame.columns}
    with tabular_server.client() as client:
        by_records = client.post("/predict", json={"records": records(frame)})
        by_columns = client.post("/predict", json={"columns": columns})
        one = client.post("/predict", json={"columns": records(frame.iloc[:1])[0]})
    assert by_records.status_code == 200, by_records.text
    assert by_records.json() == {"predictions": expected}
    assert by_columns.json() == {"predictions": expected}
    assert one.json() == {"predictions": expected[:1]}
    assert by_records.headers["x-request-id"]


def test_predict_missing_values_and_extra_columns(tabular_server, tabular, rows):
    frame = rows.iloc[80:84].copy()
    frame.loc[frame.index[0], "income"] = np.nan  # the imputer handles it, as in training
    body = records(frame)
    body[1]["comment"] = "not a column"  # ignored unless strict
    with tabular_server.client() as client:
        answer = client.post("/predict", json={"records": body})
        strict = client.post("/predict", json={"records": body, "strict": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == list(tabular.predict(frame))
    assert strict.status_code == 400
    assert "comment" in strict.json()["error"]


def test_predict_instances_for_an_array_bundle(image_server, image, image_data):
    images, _ = image_data
    with image_server.client() as client:
        answer = client.post("/predict", json={"instances": images[:5].tolist()})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], image.predict(images[:5]), atol=ATOL)


def test_a_request_larger_than_the_batch_limit(tabular_server, tabular):
    frame, _ = make_tabular_frame(1500, seed=11)  # max_batch_size is 256 rows
    with tabular_server.client() as client:
        answer = client.post("/predict", json={"records": records(frame)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == list(tabular.predict(frame))


# --------------------------------------------------------------------------- errors


def test_schema_error_is_400_with_the_message(tabular_server, rows):
    body = records(rows.iloc[:2])
    for record in body:
        del record["income"]
    with tabular_server.client() as client:
        answer = client.post("/predict", json={"records": body})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "missing" in error and "income" in error
    assert set(answer.json()) == {"error"}


def test_v2_schema_error_reaches_tritonclient(tabular_server, rows):
    inputs = tensor_inputs(rows.iloc[:3].drop(columns=["plan"]), binary=True)
    client = tabular_server.triton()
    try:
        with pytest.raises(InferenceServerException, match="plan") as caught:
            client.infer("churn", inputs)
    finally:
        client.close()
    assert caught.value.status() == "400"


def test_v2_unknown_model_and_version_are_404(tabular_server, rows):
    client = tabular_server.triton()
    try:
        with pytest.raises(InferenceServerException, match="Unknown model 'nope'") as caught:
            client.get_model_metadata("nope")
        assert caught.value.status() == "404"
        with pytest.raises(InferenceServerException, match="Unknown version '9'") as caught:
            client.infer("churn", tensor_inputs(rows.iloc[:1], binary=True), model_version="9")
        assert caught.value.status() == "404"
        assert not client.is_model_ready("nope")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"inputs": 3}', 400, "list of 'inputs'"),
        (
            b'{"inputs": [{"name": "age", "shape": [2], "datatype": "FP64", "data": [1.0]}]}',
            400,
            "shape holds 2 element",
        ),
        (
            b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP128", "data": [1]}]}',
            400,
            "unknown datatype 'FP128'",
        ),
        (
            b'{"inputs": [{"name": "visits", "shape": [1], "datatype": "INT64", "data": [1.5]}]}',
            400,
            "cannot be read as INT64",
        ),
        (
            b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": [30]}],'
            b' "outputs": [{"name": "logits"}]}',
            400,
            "Unknown output 'logits'",
        ),
    ],
    ids=["json", "inputs", "length", "datatype", "fraction", "output"],
)
def test_v2_malformed_requests_are_400(tabular_server, body, status, message):
    with tabular_server.client() as client:
        answer = client.post("/v2/models/churn/infer", content=body)
    assert answer.status_code == status
    assert message in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rows": []}, 'exactly one of "records"'),
        ({"records": [], "columns": {}}, 'exactly one of "records"'),
        ({"records": {"age": 3}}, '"records" must be a JSON array'),
        ({"records": [1, 2]}, "list of objects"),
        ({"records": [{"age": 30}], "strict": "yes"}, '"strict" must be true or false'),
    ],
    ids=["key", "two-keys", "records-object", "records-scalars", "strict"],
)
def test_predict_malformed_bodies_are_400(tabular_server, body, message):
    with tabular_server.client() as client:
        answer = client.post("/predict", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_unknown_path_and_method(tabular_server):
    with tabular_server.client() as client:
        missing = client.get("/v1/models")
        wrong_method = client.get("/predict")
    assert missing.status_code == 404
    assert "No endpoint at /v1/models" in missing.json()["error"]
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


# --------------------------------------------------------------------------- batching


def test_concurrent_clients_each_get_their_own_rows(tabular_server, tabular):
    """64 concurrent clients with distinct rows; one sends a bad request among them."""
    frame, _ = make_tabular_frame(64 * 3, seed=21)
    frame["age"] = np.arange(len(frame), dtype="float64") + 18  # every row distinct
    chunks = [frame.iloc[i * 3 : i * 3 + 1 + i % 3] for i in range(64)]
    bad = records(frame.iloc[:2])
    for record in bad:
        record["plan"] = 7  # a number where training saw text

    before = tabular_server.metrics()

    async def one(client: httpx.AsyncClient, body: dict) -> httpx.Response:
        return await client.post("/predict", json=body)

    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=80)
        async with httpx.AsyncClient(
            base_url=tabular_server.url, timeout=TIMEOUT, limits=limits
        ) as client:
            bodies = [{"records": records(chunk)} for chunk in chunks]
            bodies.insert(32, {"records": bad})
            return await asyncio.gather(*(one(client, body) for body in bodies))

    answers = asyncio.run(all_at_once())
    bad_answer = answers.pop(32)
    assert bad_answer.status_code == 400
    assert "plan" in bad_answer.json()["error"]
    for chunk, answer in zip(chunks, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == list(tabular.predict(chunk))

    after = tabular_server.metrics()
    batches = after["bundle_batch_requests_count"][()] - before["bundle_batch_requests_count"][()]
    single = (
        after["bundle_batch_requests_bucket"][(("le", "1.0"),)]
        - before["bundle_batch_requests_bucket"][(("le", "1.0"),)]
    )
    assert batches < 65, "every request ran alone: nothing was batched"
    assert batches - single >= 1, "no model call merged two requests"


def test_concurrent_v2_clients_get_their_own_rows(tabular_server, tabular):
    frame, _ = make_tabular_frame(64 * 2, seed=22)
    chunks = [frame.iloc[i * 2 : i * 2 + 1 + i % 2] for i in range(64)]
    client = tabular_server.triton(concurrency=64)
    try:
        pending = [
            client.async_infer(
                "churn",
                tensor_inputs(chunk, binary=True),
                outputs=[triton.InferRequestedOutput("scores")],
            )
            for chunk in chunks
        ]
        results = [request.get_result(timeout=TIMEOUT) for request in pending]
    finally:
        client.close()
    for chunk, result in zip(chunks, results, strict=True):
        expected = tabular.predict(chunk, postprocess=False)
        np.testing.assert_allclose(result.as_numpy("scores"), expected, atol=ATOL)


# --------------------------------------------------------------------------- operations


def test_metrics_count_requests_latency_batches_and_errors(tabular_server, rows):
    with tabular_server.client() as client:
        assert client.post("/predict", json={"records": records(rows.iloc[:1])}).status_code == 200
        assert client.post("/predict", json={"records": [{"age": 1}]}).status_code == 400
        assert client.get("/v2/models/nope").status_code == 404
    metrics = tabular_server.metrics()
    requests = metrics["bundle_requests_total"]
    assert requests[(("code", "200"), ("endpoint", "predict"))] >= 1
    assert requests[(("code", "400"), ("endpoint", "predict"))] >= 1
    errors = metrics["bundle_errors_total"]
    assert errors[(("kind", "schema"),)] >= 1
    assert errors[(("kind", "not_found"),)] >= 1
    assert metrics["bundle_request_duration_seconds_count"][(("endpoint", "predict"),)] >= 2
    assert metrics["bundle_batch_rows_count"][()] >= 1
    assert metrics["bundle_rows_total"][()] >= 1


def test_access_log_is_json_lines(tabular_server, rows):
    with tabular_server.client() as client:
        answer = client.post(
            "/predict", json={"records": records(rows.iloc[:2])}, headers={"X-Request-ID": "abc-1"}
        )
    assert answer.headers["x-request-id"] == "abc-1"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        access = [line for line in tabular_server.log_lines() if line.get("request_id") == "abc-1"]
        if access:
            break
        time.sleep(0.05)
    assert access, "no access log line for the request"
    line = access[0]
    assert line["logger"] == "bundle.serve.access"
    assert line["method"] == "POST" and line["path"] == "/predict"
    assert line["status"] == 200 and line["rows"] == 2
    assert line["duration_ms"] > 0


@pytest.mark.slow
def test_graceful_shutdown_finishes_requests_in_flight(image_bundle, tmp_path, image, image_data):
    # Holds each request 1.5 s for company: the request is in flight when SIGTERM comes.
    log = tmp_path / "slow.log"
    server = start_server(image_bundle[0], log, max_wait_ms=1500.0, max_batch_size=4096)
    server = wait_ready(server)
    images, _ = image_data
    answers: list[httpx.Response] = []

    def send() -> None:
        with server.client() as client:
            answers.append(client.post("/predict", json={"instances": images[:3].tolist()}))

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)  # the request now waits in the batcher (max_wait_ms=1500)
    server.process.send_signal(signal.SIGTERM)
    sender.join(timeout=TIMEOUT)
    # uvicorn re-raises the signal once it has shut down, so the exit status says SIGTERM.
    assert server.process.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)
    assert len(answers) == 1 and answers[0].status_code == 200
    np.testing.assert_allclose(
        answers[0].json()["predictions"], image.predict(images[:3]), atol=ATOL
    )
    messages = [line["message"] for line in server.log_lines()]
    assert any("Shutting down" in message for message in messages)
    assert any("Finished server process" in message for message in messages)


# --------------------------------------------------------------------------- run() itself


@pytest.fixture(scope="module")
def lambda_bundle(tmp_path_factory, image_parts, image_data):
    """A bundle with a pickled lambda step: loading it needs trusted=True."""
    from sklearn.preprocessing import FunctionTransformer

    images, _ = image_data
    step = FunctionTransformer(lambda x: x).fit(images[:4])
    root = tmp_path_factory.mktemp("lambda") / "lambda"
    return Bundle(image_parts, preprocess=step, input_example=images[:4], name="lambda").save(root)


def test_run_refuses_an_untrusted_bundle_before_listening(lambda_bundle):
    # In a child process: were the refusal missing, run() would serve forever.
    result = run_python(
        f"""
        from bundle.serve import run
        run({str(lambda_bundle)!r}, port={free_port()})
        """,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"{UnsafeLoadError.__name__}" in result.stderr
    assert "trusted=True" in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_workers_that_cannot_load_stop_the_server_with_the_reason(lambda_bundle):
    # Without the refusal reaching the parent, uvicorn would restart the workers forever.
    result = run_python(
        f"""
        from bundle.serve import run
        run({str(lambda_bundle)!r}, port={free_port()}, workers=2)
        """,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-3:]
    assert any(line.startswith("bundle.errors.BundleError: Refusing to load") for line in last)
    assert "trusted=True" in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be at least 1"),
        ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
        ({"max_wait_ms": -1}, "max_wait_ms must be 0 or more"),
    ],
)
def test_run_checks_its_arguments(image_bundle, options, message):
    from bundle.serve import run

    with pytest.raises(ValueError, match=message):
        run(image_bundle[0], port=free_port(), **options)


@pytest.mark.slow
def test_workers_share_the_port_and_sum_their_metrics(image_bundle, tmp_path, image, image_data):
    images, _ = image_data
    server = wait_ready(start_server(image_bundle[0], tmp_path / "workers.log", workers=2))
    try:
        for i in range(30):
            with server.client() as client:  # a new connection each: spread over workers
                answer = client.post("/predict", json={"instances": images[i : i + 1].tolist()})
            assert answer.status_code == 200
            np.testing.assert_allclose(
                answer.json()["predictions"], image.predict(images[i : i + 1]), atol=ATOL
            )
        for _ in range(4):  # whichever worker answers the scrape, it reports all workers
            requests = server.metrics()["bundle_requests_total"]
            assert requests[(("code", "200"), ("endpoint", "predict"))] == 30
        pids = {line["pid"] for line in server.log_lines() if line.get("message") == "ready"}
        assert len(pids) == 2
    finally:
        assert server.stop() in (0, -signal.SIGTERM)


# --------------------------------------------------------------------------- embedding


class _FaultyBundle:
    """A real loaded bundle whose predict fails unexpectedly on rows with visits == 4242."""

    def __init__(self, inner: Bundle):
        self._inner = inner
        self.manifest = inner.manifest
        self.input_schema = inner.input_schema

    def predict(self, raw, **options):
        if 4242 in set(pd.DataFrame(raw)["visits"].tolist()):
            raise RuntimeError("injected failure")
        return self._inner.predict(raw, **options)


@pytest.fixture
def embedded(tabular):
    """create_app() on a faulty bundle, in uvicorn on a thread of this process."""
    import uvicorn

    from bundle.serve import create_app

    app = create_app(_FaultyBundle(tabular), max_wait_ms=50.0, max_body_bytes=200_000)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "embedded server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=TIMEOUT)


def test_unexpected_error_is_500_with_request_id_and_no_traceback(embedded, rows, caplog):
    good = records(rows.iloc[:2])
    bad = records(rows.iloc[2:3])
    bad[0]["visits"] = 4242

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=embedded, timeout=TIMEOUT) as client:
            return await asyncio.gather(
                client.post("/predict", json={"records": bad}),
                client.post("/predict", json={"records": good}),
            )

    with caplog.at_level("ERROR", logger="bundle.serve"):
        failed, fine = asyncio.run(both())
    assert fine.status_code == 200  # merged with the failing request, answered on its own
    assert failed.status_code == 500
    body = failed.json()
    assert body["request_id"] == failed.headers["x-request-id"]
    assert body["request_id"] in body["error"]
    assert "Traceback" not in failed.text and "injected" not in failed.text
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id")]
    assert logged and logged[0].fields["request_id"] == body["request_id"]
    assert logged[0].exc_info is not None


def test_embedded_app_refuses_bodies_over_the_limit(embedded):
    with httpx.Client(base_url=embedded, timeout=TIMEOUT) as client:
        answer = client.post("/predict", content=b"[" + b"0," * 150_000 + b"0]")
    assert answer.status_code == 413
    assert "over the server's limit of 200,000" in answer.json()["error"]


def test_embedded_app_without_lifespan_warms_up_on_first_request(tabular, rows):
    from bundle.serve import create_app

    app = create_app(tabular)
    transport = httpx.ASGITransport(app=app)  # runs no lifespan events

    async def ask(start: int) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            body = {"records": records(rows.iloc[start : start + 3])}
            return await client.post("/predict", json=body, timeout=TIMEOUT)

    for start in (0, 3):  # each in a new event loop, as some hosts and test clients do
        answer = asyncio.run(ask(start))
        assert answer.status_code == 200
        assert answer.json()["predictions"] == list(tabular.predict(rows.iloc[start : start + 3]))
