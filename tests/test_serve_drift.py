"""Live drift in the server (bundle/serve/drift.py): a real app in uvicorn, a real client."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pandas as pd
import pytest
from conftest import REPO, make_tabular_frame

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("uvicorn", reason="needs the 'serve' extra")
httpx = pytest.importorskip("httpx", reason="needs the 'dev' extra")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bundle import Bundle  # noqa: E402

TIMEOUT = 30
GOLDEN = REPO / "tests" / "data" / "golden-v1" / "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(bundle, **options):
    """create_app() in uvicorn on a thread of this process; yields its base URL."""
    import uvicorn

    from bundle.serve import create_app

    app = create_app(bundle, max_wait_ms=1.0, **options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def loaded(tabular_bundle):
    return Bundle.load(tabular_bundle[0])


def tensor_request(frame) -> dict:
    """An Open Inference Protocol request with one JSON tensor per column."""
    types = {"age": "FP64", "income": "FP64", "score": "FP64", "visits": "INT64"}
    inputs = []
    for column in frame.columns:
        values = [None if value is None or value != value else value for value in frame[column]]
        datatype = types.get(column, "BYTES")
        inputs.append({"name": column, "datatype": datatype, "shape": [len(frame)], "data": values})
    return {"inputs": inputs}


def samples(text: str, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.mark.slow
def test_live_drift_counts_what_the_server_scores(loaded):
    frame, _ = make_tabular_frame(400, seed=31)
    frame.loc[frame.index[:100], "plan"] = "enterprise"  # unseen at training
    frame["income"] = frame["income"].astype(object).where(frame["income"].notna(), None)
    records = frame.to_dict(orient="records")
    with serving(loaded, drift_window=60.0) as url, httpx.Client(timeout=TIMEOUT) as client:
        before = client.get(f"{url}/drift").json()
        assert before["rows"] == 0  # the warm-up row is not traffic
        for start in range(0, 400, 40):  # ten requests, merged or not by the batcher
            answer = client.post(f"{url}/predict", json={"records": records[start : start + 40]})
            assert answer.status_code == 200, answer.text
        report = client.get(f"{url}/drift").json()
        metrics = client.get(f"{url}/metrics").text
        # The Open Inference Protocol endpoint's tensors are counted too.
        tensors = tensor_request(frame.iloc[:30])
        answer = client.post(f"{url}/v2/models/churn/infer", json=tensors)
        assert answer.status_code == 200, answer.text
        assert client.get(f"{url}/drift").json()["rows"] == 430
    assert report["window_seconds"] == 60.0 and report["rows"] == 400
    plan = next(f for f in report["features"] if f["name"] == "plan")
    assert plan["unseen_share"] == 0.25
    assert plan["unseen_values"] == [{"value": "enterprise", "share": 0.25}]
    assert plan["drifted"] and "plan" in report["drifted_features"]
    assert "bins" not in plan  # the plots stay in the HTML report
    outputs = {f["name"] for f in report["features"] if f["role"] == "output"}
    assert outputs == {"prediction", "score_churn", "score_stay", "score_upgrade"}
    assert samples(metrics, "bundle_drift_window_rows") == {(): 400.0}
    assert samples(metrics, "bundle_drift_uncounted_rows_total") == {(): 0.0}
    assert report["uncounted_rows"] == 0
    key = (("feature", "plan"), ("role", "input"))
    assert samples(metrics, "bundle_drift_unseen_share")[key] == 0.25
    assert samples(metrics, "bundle_drift_detected")[key] == 1.0
    assert samples(metrics, "bundle_drift_ks")[(("feature", "age"), ("role", "input"))] < 0.3


def test_live_drift_off_and_without_a_profile(loaded):
    with serving(loaded, drift_window=None) as url, httpx.Client(timeout=TIMEOUT) as client:
        answer = client.get(f"{url}/drift")
        metrics = client.get(f"{url}/metrics").text
    assert answer.status_code == 404
    assert "live drift off (drift_window=None)" in answer.json()["error"]
    assert "bundle_drift" not in metrics
    golden = Bundle.load(GOLDEN)
    with serving(golden) as url, httpx.Client(timeout=TIMEOUT) as client:
        answer = client.get(f"{url}/drift")
    assert answer.status_code == 404
    assert "the bundle has no training profile" in answer.json()["error"]


def _columns(frame) -> dict:
    """A batch as the server's batch worker holds it: request columns as lists."""
    return {
        name: frame[name].astype(object).where(frame[name].notna(), None).tolist()
        for name in frame.columns
    }


def test_live_drift_counts_off_the_request_path_with_a_bounded_backlog(loaded, monkeypatch):
    from bundle.serve import drift

    frame, _ = make_tabular_frame(64, seed=37)
    columns = _columns(frame)
    scores = loaded.predict(frame, postprocess=False)
    labels = loaded.decode(scores)
    monkeypatch.setattr(drift, "FLUSH_ROWS", 128)
    live = drift.LiveDrift(loaded, seconds=60.0)
    for _ in range(4):  # 256 rows: two hand-offs to the counting thread, nothing held
        live.observe(columns, scores, labels, 64)
    deadline = time.monotonic() + TIMEOUT
    while live.window.snapshot().rows < 256:  # no flush: the thread counts them
        assert time.monotonic() < deadline, "the counting thread did not count"
        time.sleep(0.01)
    assert live._thread is not None and live._thread.name == "bundle-drift-counter"

    # A counter that falls behind: rows past the backlog bound are tallied, not held.
    monkeypatch.setattr(drift, "MAX_BACKLOG_ROWS", 192)
    with live._counting:  # the counter is busy
        for _ in range(5):
            live.observe(columns, scores, labels, 64)
    assert live.uncounted_rows == 2 * 64  # 3 batches fit the bound of 192 rows
    report = live.to_dict()  # counts what is held first
    assert report["rows"] == 256 + 3 * 64 and report["uncounted_rows"] == 128
    expected = loaded.drift(pd.concat([frame] * 7), outputs=True).to_dict()
    ages = {f["name"]: f for f in report["features"]}["age"]
    assert ages["ks"] == pytest.approx(
        {f["name"]: f for f in expected["features"]}["age"]["ks"], abs=1e-12
    )
    from bundle.serve.drift import DriftCollector

    families = {family.name: family for family in DriftCollector(live).collect()}
    assert families["bundle_drift_uncounted_rows"].samples[0].value == 128
