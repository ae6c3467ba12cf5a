"""Models with several outputs: lists, tuples and dicts, alike everywhere.

A two-head model (species: softmax over 3 classes, decoded by a LabelEncoder; weight: a
regression, decoded by the target scaler it was trained on) is saved with one postprocess
step per output, then loaded in a fresh process: golden outputs, ``predict`` with and
without postprocessing, ``predict_file``, the CLI and a real server, each named after the
model's outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import run_python

from bundle import Bundle, UsageError

ATOL = 1e-6
SPECIES = np.array(["adelie", "gentoo", "chinstrap"])
BUNDLE = shutil.which("bundle", path=os.path.dirname(sys.executable))


def penguins(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "bill": rng.normal(44, 5, n),
            "flipper": rng.normal(200, 14, n),
            "depth": rng.normal(17, 2, n),
        }
    )
    species = SPECIES[(frame["bill"] > 44).to_numpy(int) + (frame["flipper"] > 205).to_numpy(int)]
    weight = 20 * frame["flipper"].to_numpy() + rng.normal(0, 50, n)
    return frame, species, weight


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """The trained two-head list-output model, its steps, and its saved bundle."""
    import keras
    from sklearn.preprocessing import LabelEncoder, StandardScaler

    frame, species, weight = penguins(200)
    scaler = StandardScaler().fit(frame)
    le = LabelEncoder().fit(species)
    y_scaler = StandardScaler().fit(weight.reshape(-1, 1))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    heads = [
        keras.layers.Dense(3, activation="softmax", name="species")(hidden),
        keras.layers.Dense(1, name="weight")(hidden),
    ]
    model = keras.Model(inputs, heads)
    model.compile("adam", loss=["sparse_categorical_crossentropy", "mse"])
    model.fit(
        scaler.transform(frame),
        [le.transform(species), y_scaler.transform(weight.reshape(-1, 1))],
        epochs=3,
        verbose=0,
    )
    root = tmp_path_factory.mktemp("outputs") / "penguins"
    path = Bundle(
        model,
        preprocess=scaler,
        postprocess={"species": le, "weight": y_scaler},
        input_example=frame.iloc[:50],
        name="penguins",
        version="1",
    ).save(root)
    return model, scaler, le, y_scaler, path


def test_golden_outputs_and_manifest_are_named_after_the_outputs(two_heads):
    *_, path = two_heads
    manifest = json.loads((path / "manifest.json").read_text())
    assert [o["name"] for o in manifest["model"]["outputs"]] == ["species", "weight"]
    assert [r.get("output") for r in manifest["postprocess"]] == ["species", "weight"]
    assert manifest["example"]["scores"] == "example/scores.npz"
    assert manifest["example"]["predictions"] == "example/predictions.npz"
    with np.load(path / "example" / "scores.npz", allow_pickle=False) as scores:
        assert sorted(scores.files) == ["species", "weight"]
        assert scores["species"].shape == (50, 3) and scores["weight"].shape == (50, 1)
    with np.load(path / "example" / "predictions.npz", allow_pickle=False) as labels:
        assert set(labels["species"]) <= set(SPECIES)


@pytest.mark.slow
def test_list_outputs_round_trip_in_a_fresh_process(two_heads, tmp_path):
    model, scaler, le, y_scaler, path = two_heads
    frame, _, _ = penguins(30, seed=1)
    frame.to_parquet(tmp_path / "rows.parquet")
    result = run_python(
        f"""
        import numpy as np, pandas as pd
        from bundle import Bundle
        loaded = Bundle.load({str(path)!r})
        rows = pd.read_parquet({str(tmp_path / "rows.parquet")!r})
        scores = loaded.predict(rows, postprocess=False)
        decoded = loaded.predict(rows)
        print(type(scores).__name__, type(decoded).__name__, loaded.output_names)
        np.save({str(tmp_path / "species.npy")!r}, scores[0])
        np.save({str(tmp_path / "weight.npy")!r}, scores[1])
        np.save({str(tmp_path / "labels.npy")!r}, decoded[0].astype(str))
        np.save({str(tmp_path / "grams.npy")!r}, decoded[1])
        empty = loaded.predict(rows.iloc[:0])
        print(type(empty).__name__, [np.shape(e) for e in empty])
        print(bool(loaded.verify()))
        loaded.predict_file({str(tmp_path / "rows.parquet")!r}, {str(tmp_path / "out.csv")!r},
                            scores=True)
        """
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "list list ['species', 'weight']"
    assert lines[1] == "list [(0,), (0, 1)]"
    assert lines[2] == "True"
    species, weight = model.predict(scaler.transform(frame), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "species.npy"), species, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.load(tmp_path / "weight.npy"), weight, rtol=0, atol=ATOL)
    labels = le.inverse_transform(species.argmax(axis=1))
    assert np.array_equal(np.load(tmp_path / "labels.npy"), labels.astype(str))
    grams = y_scaler.inverse_transform(weight)
    np.testing.assert_allclose(np.load(tmp_path / "grams.npy"), grams, rtol=1e-6)
    out = pd.read_csv(tmp_path / "out.csv")
    classes = [f"species_score_{c}" for c in le.classes_]
    assert list(out.columns) == ["species", *classes, "weight", "weight_score"]
    assert list(out["species"]) == list(labels)
    np.testing.assert_allclose(out["weight"], grams[:, 0], rtol=1e-6)
    np.testing.assert_allclose(out[classes], species, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(BUNDLE is None, reason="the `bundle` script is not installed")
def test_cli_predict_columns_are_named_after_the_outputs(two_heads, tmp_path):
    *_, path = two_heads
    frame, _, _ = penguins(5, seed=2)
    frame.insert(0, "id", range(5))
    frame.to_csv(tmp_path / "rows.csv", index=False)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [
            BUNDLE,
            "predict",
            path,
            tmp_path / "rows.csv",
            "-o",
            tmp_path / "o.csv",
            "--id-column",
            "id",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    out = pd.read_csv(tmp_path / "o.csv")
    assert list(out.columns) == ["id", "species", "weight"]
    assert set(out["species"]) <= set(SPECIES)


@pytest.mark.parametrize("structure", ["dict", "tuple"])
def test_dict_and_tuple_outputs_behave_like_lists(structure, tmp_path):
    """Dict outputs are named by their keys (not their layers), tuples like lists."""
    import keras
    from sklearn.preprocessing import LabelEncoder

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    kind = keras.layers.Dense(2, activation="softmax", name="kind_layer")(inputs)
    size = keras.layers.Dense(1, name="size_layer")(inputs)
    outputs = {"kind": kind, "size": size} if structure == "dict" else (kind, size)
    model = keras.Model(inputs, outputs)
    names = ["kind", "size"] if structure == "dict" else ["kind_layer", "size_layer"]
    le = LabelEncoder().fit(["cat", "dog"])
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    saved = Bundle(model, postprocess={names[0]: le}, input_example=x, name="two").save(tmp_path)
    loaded = Bundle.load(saved, trusted=True)
    assert loaded.output_names == names
    scores = loaded.predict(x, postprocess=False)
    decoded = loaded.predict(x)
    expected = model(x)
    if structure == "dict":
        assert isinstance(scores, dict) and list(decoded) == names
        got = [scores["kind"], scores["size"]]
        labels, size = decoded["kind"], decoded["size"]
    else:
        assert isinstance(scores, list)
        got, (labels, size) = scores, decoded
    expected = [expected["kind"], expected["size"]] if structure == "dict" else expected
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, np.asarray(e), rtol=0, atol=ATOL)
    assert list(labels) == list(le.inverse_transform(np.asarray(got[0]).argmax(axis=1)))
    np.testing.assert_array_equal(size, got[1])  # no step: as the model gave it
    assert loaded.verify()


def test_postprocess_must_name_the_outputs(two_heads):
    model, scaler, le, _, _ = two_heads
    with pytest.raises(UsageError, match=r"The model has 2 outputs \('species', 'weight'\)"):
        Bundle(model, preprocess=scaler, postprocess=le)
    with pytest.raises(UsageError, match=r"1 output\(s\) the model does not have: 'spieces'"):
        Bundle(model, preprocess=scaler, postprocess={"spieces": le})


@pytest.mark.slow
def test_a_server_answers_one_tensor_per_output(two_heads, tmp_path):
    """OIP outputs named after the model's outputs; <output>_scores on request."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from test_serve import start_server, wait_ready

    model, scaler, le, y_scaler, path = two_heads
    frame, _, _ = penguins(4, seed=3)
    server = wait_ready(start_server(path, tmp_path / "server.log"))
    try:
        body = {
            "inputs": [
                {"name": c, "datatype": "FP64", "shape": [4], "data": frame[c].tolist()}
                for c in frame.columns
            ]
        }
        with httpx.Client(base_url=server.url, timeout=60) as client:
            meta = client.get("/v2/models/penguins").json()
            answer = client.post("/v2/models/penguins/infer", json=body).json()
            asked = client.post(
                "/v2/models/penguins/infer",
                json={**body, "outputs": [{"name": "species_scores"}]},
            ).json()
            plain = client.post("/predict", json={"records": frame.to_dict("records")}).json()
    finally:
        server.stop()
    names = [o["name"] for o in meta["outputs"]]
    assert names == ["species", "weight", "species_scores", "weight_scores"]
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert list(outputs) == names  # no outputs named: all of them (the protocol's rule)
    species, weight = model.predict(scaler.transform(frame), verbose=0)
    labels = list(le.inverse_transform(species.argmax(axis=1)))
    assert outputs["species"]["datatype"] == "BYTES" and outputs["species"]["data"] == labels
    np.testing.assert_allclose(
        outputs["weight"]["data"], y_scaler.inverse_transform(weight)[:, 0], rtol=1e-6
    )
    (scores,) = asked["outputs"]
    assert scores["name"] == "species_scores" and scores["shape"] == [4, 3]
    np.testing.assert_allclose(np.reshape(scores["data"], (4, 3)), species, rtol=0, atol=ATOL)
    assert plain["predictions"]["species"] == labels
