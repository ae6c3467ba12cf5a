"""bundle.serve for an image bundle: encoded JPEG/PNG bytes through tritonclient (binary and
JSON, HTTP and gRPC) and the plain JSON endpoint, decoded as training read its files."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the 'serve' extra")
triton = pytest.importorskip("tritonclient.http", reason="needs the 'dev' extra")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs the 'dev' extra")

from test_serve import ATOL, start_server, wait_ready  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from bundle import Bundle  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pets_server(pets_bundle, tmp_path_factory):
    server = start_server(pets_bundle[0], tmp_path_factory.mktemp("logs") / "pets.log")
    try:
        yield wait_ready(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def files(pets_folder):
    """Six training files, JPEG and PNG, and the bundle's answers for them in this process."""
    paths = sorted(str(p) for p in pets_folder.rglob("*.*"))[::3][:6]
    assert {Path(p).suffix for p in paths} == {".jpg", ".png"}
    return paths


@pytest.fixture(scope="module")
def expected(pets_bundle, files):
    loaded = Bundle.load(pets_bundle[0])
    return loaded.predict(files, postprocess=False), loaded.predict(files)


def _encoded(files) -> np.ndarray:
    return np.array([Path(f).read_bytes() for f in files], dtype=object)


def test_model_metadata_declares_a_bytes_input(pets_server):
    metadata = pets_server.triton().get_model_metadata("pets")
    assert metadata["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_sends_jpeg_and_png_bytes(pets_server, files, expected, binary):
    scores, labels = expected
    tensor = triton.InferInput("input", [len(files)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(_encoded(files), binary_data=True)
    else:  # JSON carries bytes as base64 text
        text = [base64.b64encode(Path(f).read_bytes()).decode() for f in files]
        tensor.set_data_from_numpy(np.array(text, dtype=object), binary_data=False)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary) for name in ("predictions", "scores")
    ]
    result = pets_server.triton().infer("pets", [tensor], outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("scores"), scores, atol=ATOL)
    assert [
        p.decode() if isinstance(p, bytes) else p for p in result.as_numpy("predictions")
    ] == list(labels)


def test_grpc_sends_image_bytes(pets_server, files, expected):
    scores, _ = expected
    tensor = grpcclient.InferInput("input", [len(files)], "BYTES")
    tensor.set_data_from_numpy(_encoded(files))
    result = pets_server.grpc().infer(
        "pets", [tensor], outputs=[grpcclient.InferRequestedOutput("scores")]
    )
    np.testing.assert_allclose(result.as_numpy("scores"), scores, atol=ATOL)


def test_predict_endpoint_takes_base64_images(pets_server, files, expected):
    _, labels = expected
    text = [base64.b64encode(Path(f).read_bytes()).decode() for f in files]
    with pets_server.client() as client:
        plain = client.post("/predict", json={"instances": text})
        wrapped = client.post("/predict", json={"instances": [{"b64": t} for t in text]})
    assert plain.status_code == 200, plain.text
    assert plain.json()["predictions"] == list(labels)
    assert wrapped.json() == plain.json()


def test_a_bad_image_is_a_400_naming_it_and_a_path_is_never_opened(pets_server, files):
    good = Path(files[0]).read_bytes()
    tensor = triton.InferInput("input", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([good, good[:40]], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match=r"Cannot read image bytes\[1\]") as err:
        pets_server.triton().infer("pets", [tensor])
    assert "400" in str(err.value.status()) or "Bad Request" in str(err.value)
    with pets_server.client() as client:
        answer = client.post("/predict", json={"instances": [files[0]]})
    assert answer.status_code == 400
    assert "Cannot read image bytes[0]" in answer.json()["error"]
    assert files[0] not in answer.json()["error"]
