"""bundle.serve: real server processes on 127.0.0.1, real clients (tritonclient, httpx).

The Open Inference Protocol endpoints are exercised with tritonclient (the protocol's
reference client), the plain JSON endpoint with httpx. Every answer is compared with
``Bundle.predict`` on the same rows in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
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
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs the 'dev' extra")

import grpc  # noqa: E402
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
    grpc_port: int | None = None

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

    def grpc(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")

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
    """Start ``bundle.serve.run`` in a fresh Python process (not yet waited for).

    gRPC listens on a free port of its own (never the default 8081: the machine is shared).
    """
    port = free_port()
    options.setdefault("grpc_port", free_port())
    arguments = ", ".join(f"{key}={value!r}" for key, value in options.items())
    code = f"from bundle.serve import run; run({str(path)!r}, port={port}, {arguments})"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    handle = open(log, "w")  # noqa: SIM115 -- the process owns it until it exits
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=handle, stderr=subprocess.STDOUT, env=env
    )
    return Server(process, port, log, options["grpc_port"])


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


def test_v2_infer_defaults_to_all_outputs_and_takes_n_by_1_columns(tabular_server, tabular, rows):
    # The protocol: a request that names no outputs gets every output of the model.
    frame = rows.iloc[40:50]
    client = tabular_server.triton()
    try:
        result = client.infer(
            "churn", tensor_inputs(frame, binary=False, two_d=True), model_version="1.0.0"
        )
    finally:
        client.close()
    names = [output["name"] for output in result.get_response()["outputs"]]
    assert names == ["predictions", "scores"]
    assert text(result.as_numpy("predictions")) == list(tabular.predict(frame))
    np.testing.assert_allclose(
        result.as_numpy("scores"), tabular.predict(frame, postprocess=False), atol=ATOL
    )


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


# --------------------------------------------------------------------------- hostile requests

DEEP = 100_000  # levels of JSON nesting: far past the interpreter's recursion limit


def _deep(levels: int = DEEP) -> bytes:
    return b"[" * levels + b"]" * levels


def _binary_request(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


HOSTILE = {
    "shape-of-booleans": (
        "/v2/models/churn/infer",
        json.dumps(
            {"inputs": [{"name": "age", "shape": [True], "datatype": "FP64", "data": [1.0]}]}
        ).encode(),
        {},
        "Input 'age': 'shape' must be a list of at most 32 non-negative integers, got [True].",
    ),
    "bytes-claiming-10^13-elements": (
        "/v2/models/churn/infer",
        *_binary_request(
            {
                "inputs": [
                    {
                        "name": "plan",
                        "shape": [10**13],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            b"\x03\x00\x00\x00pro\x00",
        ),
        "Input 'plan': shape [10000000000000] claims 10,000,000,000,000 BYTES element(s), but "
        "its 8 bytes of data hold at most 2",
    ),
    "numbers-claiming-more-than-sent": (
        "/v2/models/churn/infer",
        *_binary_request(
            {
                "inputs": [
                    {
                        "name": "age",
                        "shape": [10**12, 10**12],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            b"\x00" * 8,
        ),
        "Input 'age': 8 bytes of data, but shape [1000000000000, 1000000000000] of FP64 needs "
        "8,000,000,000,000,000,000,000,000.",
    ),
    "datatype-an-object": (
        "/v2/models/churn/infer",
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": {"a": 1}, "data": [1]}]}',
        {},
        "Input 'age': unknown datatype {'a': 1}",
    ),
    "output-name-an-object": (
        "/v2/models/churn/infer",
        b'{"inputs": [], "outputs": [{"name": {"a": 1}}]}',
        {},
        "Unknown output {'a': 1}; model 'churn' has outputs 'predictions', 'scores'.",
    ),
    "data-nested-33-deep": (
        "/v2/models/churn/infer",
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": '
        + _deep(33)
        + b"}]}",
        {},
        "Input 'age': its data is nested deeper than 32 levels",
    ),
    "infer-body-nested-100000-deep": (
        "/v2/models/churn/infer",
        _deep(),
        {},
        "The request body's JSON is nested too deeply to parse",
    ),
    "data-nested-100000-deep": (
        "/v2/models/churn/infer",
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": '
        + _deep()
        + b"}]}",
        {},
        "The request body's JSON is nested too deeply to parse",
    ),
    "version-infer-nested-100000-deep": (
        "/v2/models/churn/versions/1.0.0/infer",
        _deep(),
        {},
        "The request body's JSON is nested too deeply to parse",
    ),
    "predict-nested-100000-deep": (
        "/predict",
        b'{"records": ' + _deep() + b"}",
        {},
        "The request body's JSON is nested too deeply to parse",
    ),
}


@pytest.mark.parametrize(("path", "body", "headers", "message"), HOSTILE.values(), ids=HOSTILE)
def test_hostile_requests_are_400_naming_the_problem(tabular_server, path, body, headers, message):
    with tabular_server.client() as client:
        answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert set(answer.json()) == {"error"}


def test_sizes_claimed_in_a_request_are_checked_before_allocating(tabular):
    """A BYTES header claiming 10^8 elements would allocate 800 MB were it believed."""
    import tracemalloc

    from bundle.serve import create_app

    app = create_app(tabular)
    body, headers = _binary_request(
        {
            "inputs": [
                {
                    "name": "plan",
                    "shape": [10**8],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        b"\x03\x00\x00\x00pro\x00",
    )

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            await app.state.bundle_server.start()
            tracemalloc.start()
            try:
                return await client.post("/v2/models/churn/infer", content=body, headers=headers)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                assert peak < 20 << 20, f"{peak:,} bytes allocated for an 8-byte tensor"

    answer = asyncio.run(ask())
    assert answer.status_code == 400
    assert "claims 100,000,000 BYTES element(s)" in answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/predict", "POST"),
        ("PUT", "/v2/models/churn/infer", "POST"),
        ("POST", "/v2/health/live", "GET, HEAD"),
        ("DELETE", "/v2/models/churn", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(tabular_server, method, path, allowed):
    with tabular_server.client() as client:
        answer = client.request(method, path, content=b"{}")
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed  # RFC 9110: a 405 says what is allowed
    assert answer.json() == {"error": f"{method} is not allowed on {path}; use {allowed}."}


# --------------------------------------------------------------------------- fuzzing

COLUMNS = ["age", "income", "score", "visits", "plan", "region"]
GOOD_ROW = {"age": 30.0, "income": 1000.0, "score": 0.1, "visits": 2, "plan": "pro", "region": "x"}


def _strategies():
    """Requests of every shape a client could send, mostly wrong in some way."""
    from hypothesis import strategies as st

    scalars = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=8,
    )
    keys = st.sampled_from([*COLUMNS, "input", "x", ""]) | st.text(max_size=4)
    names = keys | values
    datatypes = st.sampled_from(["BOOL", "UINT8", "INT64", "FP16", "FP32", "FP64", "BYTES"])
    shapes = st.lists(st.integers(-2, 2**40) | st.booleans() | st.floats(), max_size=4)
    parameters = st.dictionaries(
        st.sampled_from(["binary_data_size", "binary_data", "x"]), values | st.integers(0, 64)
    )
    tensor = st.fixed_dictionaries(
        {"name": names, "datatype": datatypes | values, "shape": shapes | values},
        optional={"data": values, "parameters": parameters | values},
    )
    infer = st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=3) | values},
        optional={
            "outputs": st.lists(
                st.fixed_dictionaries({"name": names}, optional={"parameters": values}),
                max_size=2,
            )
            | values,
            "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": values})
            | values,
            "id": values,
        },
    )
    one_bad_value = st.builds(
        lambda column, value: {"records": [{**GOOD_ROW, column: value}]},
        st.sampled_from(COLUMNS),
        values,
    )
    predict = st.one_of(
        st.fixed_dictionaries(
            {"records": st.lists(st.dictionaries(keys, values), max_size=3) | values},
            optional={"strict": values},
        ),
        st.fixed_dictionaries({"columns": st.dictionaries(keys, values) | values}),
        st.fixed_dictionaries({"instances": values}),
        one_bad_value,
        values,
    )
    return st, infer, predict


def test_fuzzed_requests_never_get_a_5xx(tabular, image):
    """Property: whatever a client sends, the answer is < 500, and an error names itself."""
    from hypothesis import HealthCheck, given, settings

    from bundle.serve import create_app

    st, infer, predict = _strategies()
    apps = {"churn": create_app(tabular), "digits": create_app(image)}
    loop = asyncio.new_event_loop()
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
        for name, app in apps.items()
    }
    for app in apps.values():
        loop.run_until_complete(app.state.bundle_server.start())
    paths = [
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/1.0.0/infer",
        "/predict",
        "/v2",
        "/v2/models/{model}",
        "/v2/models/x/infer",
        "/v2/health/ready",
        "/metrics",
    ]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data) -> None:
        model = data.draw(st.sampled_from(sorted(apps)))
        kind = data.draw(st.sampled_from(["infer", "binary", "predict", "raw"]))
        method, headers = "POST", {}
        if kind == "infer":
            path, body = f"/v2/models/{model}/infer", json.dumps(data.draw(infer)).encode()
        elif kind == "binary":
            head = json.dumps(data.draw(infer)).encode()
            body = head + data.draw(st.binary(max_size=40))
            path = f"/v2/models/{model}/infer"
            length = st.sampled_from([len(head), 0, -1, "x", len(body) + 5])
            headers["Inference-Header-Content-Length"] = str(data.draw(length))
        elif kind == "predict":
            path, body = "/predict", json.dumps(data.draw(predict)).encode()
        else:
            path = data.draw(st.sampled_from(paths)).format(model=model)
            method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
            body = data.draw(st.binary(max_size=60))
            encoding = st.sampled_from([None, "gzip", "deflate", "br"])
            if (chosen := data.draw(encoding)) is not None:
                headers["Content-Encoding"] = chosen
        answer = loop.run_until_complete(
            clients[model].request(method, path, content=body, headers=headers)
        )
        assert answer.status_code < 500, (path, body[:500], answer.text)
        if answer.status_code >= 400:
            error = answer.json()["error"]
            assert isinstance(error, str) and len(error) > 10

    try:
        check()
    finally:
        for client in clients.values():
            loop.run_until_complete(client.aclose())
        for app in apps.values():
            loop.run_until_complete(app.state.bundle_server.stop())
        loop.close()


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
    log = tmp_path / "slow.log"
    server = wait_ready(start_server(image_bundle[0], log))
    images, _ = image_data
    body = json.dumps({"instances": images[:3].tolist()}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body[:100])  # the request is in flight: half its body has come
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[100:])  # the server, shutting down, still reads it and answers
        status, answer = _answer_of(_read_all(sock))
    # uvicorn re-raises the signal once it has shut down, so the exit status says SIGTERM.
    assert server.process.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], image.predict(images[:3]), atol=ATOL)
    messages = [line["message"] for line in server.log_lines()]
    assert any("Shutting down" in message for message in messages)
    assert any("Finished server process" in message for message in messages)
    access = [line for line in server.log_lines() if line.get("path") == "/predict"]
    assert access and access[-1]["status"] == 200  # its access line was written out too


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
    assert any(line.startswith("bundle.errors.UnsafeLoadError: Refusing to load") for line in last)
    assert "trusted=True" in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be at least 1"),
        ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
        ({"max_wait_ms": -1}, "max_wait_ms must be 0 or more"),
        ({"grpc_port": 70000}, r"grpc_port must be a TCP port \(0-65535\) or None; got 70000"),
        ({"header_timeout": 0}, "header_timeout must be more than 0 seconds; got 0"),
        ({"body_timeout": -1}, "body_timeout must be more than 0 seconds; got -1"),
        ({"max_connections": 0}, "max_connections must be at least 1; got 0"),
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
        # Both workers listen on the gRPC port too (SO_REUSEPORT): every call is answered.
        for i in range(6):
            client = server.grpc()  # a new channel each: spread over workers
            try:
                tensor = grpcclient.InferInput("input", [1, 8, 8, 1], "UINT8")
                tensor.set_data_from_numpy(images[i : i + 1])
                result = client.infer("digits", [tensor])
            finally:
                client.close()
            np.testing.assert_allclose(
                result.as_numpy("predictions"), image.predict(images[i : i + 1]), atol=ATOL
            )
        gpids = {
            line["pid"] for line in server.log_lines() if line.get("message") == "gRPC listening"
        }
        assert gpids == pids
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

    def decode(self, scores):
        return self._inner.decode(scores)


class _GatedBundle(_FaultyBundle):
    """A real loaded bundle whose next model call, once `armed`, holds until `release`.

    `entered` is set when that call has started: requests sent after it queue behind it,
    whatever the machine's load (no sleeps to guess with).
    """

    def __init__(self, inner: Bundle):
        super().__init__(inner)
        self.armed = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, raw, **options):
        if self.armed.is_set():
            self.armed.clear()
            self.entered.set()
            self.release.wait(TIMEOUT)
        return super().predict(raw, **options)


async def _until_queued(app, expected: tuple[int, int]) -> None:
    """Wait until the app's batcher holds `expected` (requests, rows) behind the model call."""
    batcher = app.state.bundle_server.batcher
    deadline = time.monotonic() + TIMEOUT
    while batcher.queued != expected:
        assert time.monotonic() < deadline, f"queued {batcher.queued}, expected {expected}"
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def serving(app, **config):
    """`app` in uvicorn on a thread of this process: yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "embedded server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT)


@pytest.fixture
def embedded(tabular):
    """create_app() on a faulty bundle, in uvicorn on a thread of this process (gRPC too)."""
    from bundle.serve import create_app

    app = create_app(_FaultyBundle(tabular), max_wait_ms=50.0, max_body_bytes=200_000, grpc_port=0)
    with serving(app) as url:
        app.state.url = url
        yield app


def test_unexpected_error_is_500_with_request_id_and_no_traceback(embedded, rows, caplog):
    good = records(rows.iloc[:2])
    bad = records(rows.iloc[2:3])
    bad[0]["visits"] = 4242

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=embedded.state.url, timeout=TIMEOUT) as client:
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


def test_a_lone_request_does_not_wait_for_company(tabular, rows):
    """max_wait_ms holds a request only while others are on their way: alone, it runs."""
    from bundle.serve import create_app

    app = create_app(tabular, max_wait_ms=3000.0)
    with serving(app) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        for start in range(3):
            started = time.perf_counter()
            answer = client.post("/predict", json={"records": records(rows.iloc[start:][:1])})
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200
            assert elapsed < 1.5, f"a lone request waited {elapsed:.2f} s for company"


def test_embedded_app_refuses_bodies_over_the_limit(embedded):
    with httpx.Client(base_url=embedded.state.url, timeout=TIMEOUT) as client:
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


# --------------------------------------------------------------------------- slow clients

HEADER_TIMEOUT = 1.5  # seconds, for the guarded server


@pytest.fixture(scope="module")
def guarded(image):
    """The image bundle behind uvicorn with a short header/body timeout and 4 connections."""
    from bundle.serve import create_app, http_protocol

    limits = http_protocol(
        header_timeout=HEADER_TIMEOUT, body_timeout=HEADER_TIMEOUT, max_connections=4
    )
    with serving(create_app(image), http=limits) as url:
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _answer_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_slow_clients_are_dropped_and_others_are_served_meanwhile(guarded, image, image_data):
    """Two clients send headers a byte every 0.25 s, one sends nothing; a fourth is served."""
    images, _ = image_data
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    slow = [_connect(guarded) for _ in range(2)]
    idle = _connect(guarded)
    started = time.monotonic()
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        for byte in request:  # 68 bytes: 17 s at this pace, were it allowed to finish
            if stop.wait(0.25):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # dropped by the server

    senders = [threading.Thread(target=trickle, args=(sock,), daemon=True) for sock in slow]
    for sender in senders:
        sender.start()
    served_at = []
    with httpx.Client(base_url=guarded, timeout=TIMEOUT) as client:
        for i in range(5):
            answer = client.post("/predict", json={"instances": images[i : i + 1].tolist()})
            assert answer.status_code == 200
            np.testing.assert_allclose(
                answer.json()["predictions"], image.predict(images[i : i + 1]), atol=ATOL
            )
            served_at.append(time.monotonic() - started)
    assert served_at[-1] < HEADER_TIMEOUT, f"the others waited for the slow ones: {served_at}"
    try:
        for sock in [*slow, idle]:
            status, body = _answer_of(_read_all(sock))  # returns when the server closes
            assert status == 408
            assert body == {
                "error": f"The request's headers did not arrive within {HEADER_TIMEOUT:g} s."
            }
            elapsed = time.monotonic() - started
            assert HEADER_TIMEOUT - 0.1 < elapsed < HEADER_TIMEOUT + 10
    finally:
        stop.set()
        for sock in [*slow, idle]:
            sock.close()


def test_a_slow_body_is_dropped(guarded):
    with _connect(guarded) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"instances": '
        )
        started = time.monotonic()
        assert _read_all(sock) == b""  # closed without an answer: the request is abandoned
        assert HEADER_TIMEOUT - 0.1 < time.monotonic() - started < HEADER_TIMEOUT + 10
    with httpx.Client(base_url=guarded, timeout=TIMEOUT) as client:
        assert client.get("/v2/health/ready").status_code == 200


def test_connections_past_the_limit_get_503_until_others_close(guarded):
    held = [_connect(guarded) for _ in range(4)]  # the limit: 4 open connections
    try:
        time.sleep(0.2)  # let the server accept them all
        with _connect(guarded) as extra:
            status, body = _answer_of(_read_all(extra))
        assert status == 503
        assert body == {
            "error": "The server has 4 open connections, its limit. Retry later, or reuse a "
            "connection (keep-alive)."
        }
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the server notices the closed connections; then it accepts again
        with httpx.Client(base_url=guarded, timeout=TIMEOUT) as client:
            try:
                if client.get("/v2/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


# --------------------------------------------------------------------------- gRPC


def grpc_inputs(frame: pd.DataFrame, *, two_d: bool = False) -> list:
    """tritonclient.grpc inputs: raw_input_contents, strings as BYTES."""
    inputs = []
    for name in frame.columns:
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column)
        values = column.to_numpy() if numeric else column.to_numpy(dtype=object)
        if two_d:
            values = values.reshape(-1, 1)
        datatype = grpcclient.np_to_triton_dtype(values.dtype) if numeric else "BYTES"
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def typed_request(frame: pd.DataFrame, **fields):
    """A ModelInferRequest with typed contents (fp64_contents, bytes_contents...), built
    with tritonclient's own messages."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="churn", **fields)
    for name in frame.columns:
        column = frame[name]
        tensor = request.inputs.add(name=name, shape=[len(frame)])
        if column.dtype.kind == "f":
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(column.tolist())
        elif column.dtype.kind == "i":
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.extend(column.tolist())
        else:
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(str(v).encode() for v in column)
    return request


def rest_error(server_url: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    with httpx.Client(base_url=server_url, timeout=TIMEOUT) as client:
        answer = client.post("/v2/models/churn/infer", content=body, headers=headers or {})
    return answer.status_code, answer.json()["error"]


def test_grpc_health_and_metadata_match_rest(tabular_server):
    client = tabular_server.grpc()
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("churn")
        assert client.is_model_ready("churn", "1.0.0")
        server = client.get_server_metadata(as_json=True)
        metadata = client.get_model_metadata("churn", as_json=True)
    finally:
        client.close()
    with tabular_server.client() as rest:
        assert server == {**rest.get("/v2").json(), "extensions": ["binary_tensor_data"]}
        expected = rest.get("/v2/models/churn").json()
    for tensor in [*expected["inputs"], *expected["outputs"]]:
        tensor["shape"] = [str(d) for d in tensor["shape"]]  # protobuf JSON: int64 as text
    assert metadata == expected


@pytest.mark.parametrize("two_d", [False, True], ids=["n", "n-by-1"])
def test_grpc_infer_raw_contents_equals_bundle_predict(tabular_server, tabular, rows, two_d):
    frame = rows.iloc[100:140]
    client = tabular_server.grpc()
    try:
        result = client.infer("churn", grpc_inputs(frame, two_d=two_d), request_id="g-1")
    finally:
        client.close()
    response = result.get_response()
    assert response.id == "g-1" and response.model_version == "1.0.0"
    assert [output.name for output in response.outputs] == ["predictions", "scores"]  # all
    assert text(result.as_numpy("predictions")) == list(tabular.predict(frame))
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (40, 3)
    np.testing.assert_allclose(scores, tabular.predict(frame, postprocess=False), atol=ATOL)


def test_grpc_infer_typed_contents_and_named_outputs(tabular_server, tabular, rows):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    frame = rows.iloc[140:150].copy()
    frame.loc[frame.index[0], "income"] = np.nan  # a missing value, as in training
    request = typed_request(frame)
    request.outputs.add(name="predictions")
    channel = grpc.insecure_channel(f"127.0.0.1:{tabular_server.grpc_port}")
    try:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=TIMEOUT
        )
    finally:
        channel.close()
    assert isinstance(response, service_pb2.ModelInferResponse)
    assert [output.name for output in response.outputs] == ["predictions"]
    (output,) = response.outputs
    assert output.datatype == "BYTES" and list(output.shape) == [10]
    result = grpcclient.InferResult(response)
    assert text(result.as_numpy("predictions")) == list(tabular.predict(frame))


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing-column", "INVALID_ARGUMENT"),
        ("bytes-claiming-10^13", "INVALID_ARGUMENT"),
        ("shape-negative", "INVALID_ARGUMENT"),
        ("unknown-output", "INVALID_ARGUMENT"),
        ("unknown-model", "NOT_FOUND"),
        ("unknown-version", "NOT_FOUND"),
    ],
)
def test_grpc_errors_are_status_codes_with_the_rest_message(tabular_server, rows, case, code):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    frame = rows.iloc[:2]
    request = typed_request(frame)
    rest = {"inputs": [
        {"name": name, "shape": [2], "datatype": tensor.datatype,
         "data": [v.decode() for v in tensor.contents.bytes_contents]
         or list(tensor.contents.fp64_contents) or list(tensor.contents.int64_contents)}
        for name, tensor in zip(frame.columns, request.inputs, strict=True)
    ]}  # fmt: skip
    path_model = "churn"
    if case == "missing-column":
        del request.inputs[-1]
        del rest["inputs"][-1]
    elif case == "bytes-claiming-10^13":
        del request.inputs[:]
        request.inputs.add(name="plan", datatype="BYTES", shape=[10**13])
        request.raw_input_contents.append(b"\x03\x00\x00\x00pro\x00")
    elif case == "shape-negative":
        request.inputs[0].shape[:] = [-2]
        rest["inputs"][0]["shape"] = [-2]
    elif case == "unknown-output":
        request.outputs.add(name="logits")
        rest["outputs"] = [{"name": "logits"}]
    elif case == "unknown-model":
        request.model_name = path_model = "nope"
    else:
        request.model_version = "9"
    channel = grpc.insecure_channel(f"127.0.0.1:{tabular_server.grpc_port}")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    finally:
        channel.close()
    assert caught.value.code().name == code
    if case == "bytes-claiming-10^13":
        body, headers = _binary_request(
            {"inputs": [{"name": "plan", "shape": [10**13], "datatype": "BYTES",
                         "parameters": {"binary_data_size": 8}}]},
            b"\x03\x00\x00\x00pro\x00",
        )  # fmt: skip
    else:
        body, headers = json.dumps(rest).encode(), {}
    path = f"/v2/models/{path_model}" + ("/versions/9" if case == "unknown-version" else "")
    with tabular_server.client() as client:
        answer = client.post(f"{path}/infer", content=body, headers=headers)
    assert answer.status_code == {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404}[code]
    assert caught.value.details() == answer.json()["error"]  # the same message both ways
    assert len(caught.value.details()) > 20
    del service_pb2


def test_grpc_refuses_malformed_contents(tabular_server, rows):
    from tritonclient.grpc import service_pb2_grpc

    frame = rows.iloc[:2]
    cases = {
        "raw-count": "raw_input_contents has 1 entries for 6 inputs",
        "misplaced": "Input 'age' is FP64: its elements go in contents.fp64_contents, but the "
        "request fills contents.fp32_contents.",
        "fp16-typed": "Input 'age' is FP16, which has no typed contents",
        "duplicate": "Input 'age' appears twice.",
    }
    channel = grpc.insecure_channel(f"127.0.0.1:{tabular_server.grpc_port}")
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        for case, message in cases.items():
            request = typed_request(frame)
            if case == "raw-count":
                request.raw_input_contents.append(b"\x00" * 16)
            elif case == "misplaced":
                request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
                del request.inputs[0].contents.fp64_contents[:]
            elif case == "fp16-typed":
                request.inputs[0].datatype = "FP16"
            else:
                request.inputs.append(request.inputs[0])
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
            assert message in caught.value.details(), case
    finally:
        channel.close()


def test_grpc_and_rest_requests_share_one_batch(tabular, rows):
    """A REST and a gRPC request that wait together are answered by one model call."""
    from bundle.serve import create_app

    gated = _GatedBundle(tabular)
    app = create_app(gated, max_wait_ms=0, grpc_port=0)
    metrics = app.state.bundle_server.metrics
    frame = rows.iloc[:3]

    def batches() -> tuple[float, float]:
        samples = {s.name: s.value for s in metrics.batch_requests.collect()[0].samples}
        return samples["bundle_batch_requests_count"], samples["bundle_batch_requests_sum"]

    with serving(app) as url:

        def over_grpc():
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
            try:
                return client.infer("churn", grpc_inputs(frame))
            finally:
                client.close()

        async def three():
            async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
                first = asyncio.ensure_future(
                    client.post("/predict", json={"records": records(rows.iloc[5:6])})
                )
                try:
                    # The first request holds the model; the next two queue behind it.
                    assert await asyncio.to_thread(gated.entered.wait, TIMEOUT)
                    over = asyncio.ensure_future(asyncio.to_thread(over_grpc))
                    rest = asyncio.ensure_future(
                        client.post("/predict", json={"records": records(frame)})
                    )
                    await _until_queued(app, (2, 6))
                finally:
                    gated.release.set()
                return await asyncio.gather(first, over, rest)

        gated.armed.set()  # after the warm-up call
        before = batches()
        first, result, answer = asyncio.run(three())
        after = batches()
    # Two model calls: the first request alone, then the two that queued behind it.
    assert (after[0] - before[0], after[1] - before[1]) == (2, 3)
    assert first.json()["predictions"] == list(tabular.predict(rows.iloc[5:6]))
    assert answer.json()["predictions"] == list(tabular.predict(frame))
    assert text(result.as_numpy("predictions")) == list(tabular.predict(frame))


def test_grpc_internal_error_has_a_request_id_and_no_traceback(embedded, rows, caplog):
    frame = rows.iloc[:1].copy()
    frame["visits"] = 4242  # _FaultyBundle fails on it
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{embedded.state.grpc_port}")
    try:
        with (
            caplog.at_level("ERROR", logger="bundle.serve"),
            pytest.raises(grpcclient.InferenceServerException) as caught,
        ):
            client.infer("churn", grpc_inputs(frame), headers={"x-request-id": "g-500"})
    finally:
        client.close()
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert caught.value.message() == (
        "Internal server error (RuntimeError); request id g-500. The details are in the server log."
    )
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "g-500"]
    assert logged and logged[0].exc_info is not None


def test_grpc_message_over_the_body_limit_is_resource_exhausted(embedded):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{embedded.state.grpc_port}")
    tensor = grpcclient.InferInput("age", [30_000], "FP64")  # 240 kB > max_body_bytes 200 kB
    tensor.set_data_from_numpy(np.zeros(30_000))
    try:
        with pytest.raises(grpcclient.InferenceServerException) as caught:
            client.infer("churn", [tensor])
    finally:
        client.close()
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in caught.value.message()


def test_grpc_overload_is_unavailable(tabular, rows):
    from bundle.serve import create_app

    # A holds the model; B waits behind it and fills the queue (2 rows): C is refused.
    gated = _GatedBundle(tabular)
    app = create_app(gated, max_wait_ms=0, max_queue_rows=2, grpc_port=0)
    frame = rows.iloc[:2]
    with serving(app):
        address = f"127.0.0.1:{app.state.grpc_port}"

        def infer():
            client = grpcclient.InferenceServerClient(address)
            try:
                return client.infer("churn", grpc_inputs(frame))
            except grpcclient.InferenceServerException as exc:
                return exc
            finally:
                client.close()

        async def three():
            first = asyncio.ensure_future(asyncio.to_thread(infer))
            try:
                assert await asyncio.to_thread(gated.entered.wait, TIMEOUT)
                second = asyncio.ensure_future(asyncio.to_thread(infer))
                await _until_queued(app, (1, 2))
                third = await asyncio.to_thread(infer)
            finally:
                gated.release.set()
            return (*(await asyncio.gather(first, second)), third)

        gated.armed.set()  # after the warm-up call
        first, second, third = asyncio.run(three())
    assert not isinstance(first, Exception) and not isinstance(second, Exception)
    assert text(first.as_numpy("predictions")) == list(tabular.predict(frame))
    assert third.status() == "StatusCode.UNAVAILABLE"
    assert third.message() == (
        "The server is overloaded: 2 rows are waiting (at most 2). Retry later."
    )


def test_grpc_port_in_use_stops_the_server_with_the_reason(image_bundle, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(image_bundle[0], tmp_path / "taken.log", grpc_port=port)
        assert server.process.wait(timeout=START_TIMEOUT) != 0
    log = server.log.read_text()
    assert f"Cannot listen for gRPC on 127.0.0.1:{port}" in log
    assert "--grpc-port" in log


# --------------------------------------------------------------------------- the .proto


def test_generated_module_is_up_to_date_with_the_proto(tmp_path):
    """The committed open_inference_pb2.py describes exactly what the .proto says."""
    pytest.importorskip("grpc_tools.protoc", reason="needs the 'dev' extra")
    from google.protobuf import descriptor_pb2, descriptor_pool

    from bundle.serve._proto import open_inference_pb2 as pb

    proto_dir = Path(pb.__file__).parent
    out = tmp_path / "set.pb"
    # protoc in a child process: in one with TensorFlow's protobuf loaded it can crash.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
         f"--descriptor_set_out={out}", "open_inference.proto"],
        check=True, timeout=120,
    )  # fmt: skip
    (compiled,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file

    def drop_json_names(messages) -> None:  # protoc keeps them out of generated modules
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
            drop_json_names(message.nested_type)

    drop_json_names(compiled.message_type)
    ours = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert ours == compiled, "run `make proto` after editing open_inference.proto"
    # Patched as generate.py says: a private pool (no clash with tritonclient's stubs), no
    # protoc runtime-version guard.
    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert "_runtime_version" not in Path(pb.__file__).read_text()


def test_messages_are_wire_compatible_with_tritonclient():
    """Every field of ours has the number and type of the same field in Triton's stubs."""
    from tritonclient.grpc import service_pb2

    from bundle.serve._proto import open_inference_pb2 as pb

    def fields(descriptor) -> dict:
        out = {}
        for field in descriptor.fields:
            kind = field.message_type.full_name if field.message_type else field.type
            repeated = getattr(field, "is_repeated", None)
            if repeated is None:  # protobuf < 6
                repeated = field.label == field.LABEL_REPEATED
            out[field.name] = (field.number, kind, repeated)
        for nested in descriptor.nested_types:
            out.update({f"{nested.name}.{k}": v for k, v in fields(nested).items()})
        return out

    compared = 0
    for name, ours in pb.DESCRIPTOR.message_types_by_name.items():
        theirs = service_pb2.DESCRIPTOR.message_types_by_name[name]
        mine, reference = fields(ours), fields(theirs)
        for field, spec in mine.items():
            assert reference[field] == spec, f"{name}.{field}"
            compared += 1
    assert compared > 60
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
