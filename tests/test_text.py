"""Text models on raw strings: the Keras guide's end-to-end ``TextVectorization`` model.

``keras.Input(shape=(1,), dtype="string")`` -> ``TextVectorization`` -> ``Embedding`` ->
pooling -> a sigmoid, with a ``LabelEncoder`` for the labels. Its contract is one text
column; it is stored without pickle (the example as Parquet), replayed exactly in a fresh
process on every form a text comes in, served over the Open Inference Protocol (``BYTES``
tensors, REST and gRPC), scored on Spark (a string column) and exported as a SavedModel.
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
from test_spark import spark  # noqa: F401  (the module's local Spark session)

from bundle import Bundle, SchemaError

ATOL = 1e-6
BUNDLE = shutil.which("bundle", path=os.path.dirname(sys.executable))
GOOD = ["great", "wonderful", "loved", "superb", "fine", "moving", "brilliant", "fun"]
BAD = ["awful", "boring", "hated", "dull", "poor", "weak", "terrible", "slow"]
NOUNS = ["film", "movie", "plot", "acting", "story", "cast"]


def reviews(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = [
        f"{rng.choice(NOUNS)} was {rng.choice(GOOD if label else BAD)} and "
        f"{rng.choice(GOOD if label else BAD)}"
        for label in labels
    ]
    return texts, np.where(labels == 1, "positive", "negative")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The trained text classifier, its label encoder and its saved bundle."""
    import keras
    import tensorflow as tf
    from sklearn.preprocessing import LabelEncoder

    texts, labels = reviews(120)
    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6)
    vectorize.adapt(texts)
    inputs = keras.Input(shape=(1,), dtype="string", name="review")
    hidden = keras.layers.Embedding(40, 8)(vectorize(inputs))
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile("adam", loss="binary_crossentropy")
    le = LabelEncoder().fit(labels)
    model.fit(tf.constant(np.array(texts)[:, None]), le.transform(labels), epochs=3, verbose=0)
    root = tmp_path_factory.mktemp("text") / "sentiment"
    path = Bundle(
        model, postprocess=le, input_example=texts[:80], name="sentiment", version="1"
    ).save(root)
    return model, le, path


def expected_scores(model, texts) -> np.ndarray:
    import tensorflow as tf

    return model(tf.constant(np.array(texts, dtype=object)[:, None])).numpy()


def test_the_contract_is_one_text_column_stored_without_pickle(classifier):
    *_, path = classifier
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["model"]["inputs"] == [
        {"name": "review", "shape": [None, 1], "dtype": "string"}
    ]
    (column,) = manifest["input_schema"]["columns"]
    assert (column["name"], column["kind"], column["has_missing"]) == ("review", "string", False)
    assert manifest["example"]["input"] == "example/input.parquet"
    stored = pd.read_parquet(path / "example" / "input.parquet")
    assert list(stored.columns) == ["review"] and len(stored) == 80
    assert not [r for r in manifest["custom_objects"] if r["storage"] == "value"]
    assert not manifest["model"]["executes_code"]


@pytest.mark.slow
def test_every_form_of_text_replays_exactly_in_a_fresh_process(classifier, tmp_path):
    model, le, path = classifier
    texts, _ = reviews(12, seed=1)
    pd.DataFrame({"review": texts, "id": range(12)}).to_parquet(tmp_path / "rows.parquet")
    result = run_python(
        f"""
        import json, numpy as np, pandas as pd, pyarrow as pa
        from bundle import Bundle, SchemaError
        loaded = Bundle.load({str(path)!r})          # no trusted=True: nothing runs code
        frame = pd.read_parquet({str(tmp_path / "rows.parquet")!r})
        texts = frame["review"].tolist()
        forms = {{
            "list": texts,
            "column": frame["review"],
            "frame": frame,                              # the extra id column is ignored
            "records": [{{"review": t}} for t in texts],
            "columns": {{"review": texts}},
            "string[pyarrow]": frame["review"].astype("string[pyarrow]"),
            "object": np.array(texts, dtype=object),
            "fixed-width (n, 1)": np.array(texts)[:, None],
            "pyarrow": pa.array(texts),
        }}
        out = {{}}
        for name, raw in forms.items():
            out[name] = loaded.predict(raw, postprocess=False).tolist()
        out["one"] = loaded.predict(texts[0], postprocess=False).tolist()
        out["labels"] = loaded.predict(texts).tolist()
        try:
            loaded.predict([texts[0], None])
        except SchemaError as exc:
            out["missing"] = str(exc)
        out["verify"] = bool(loaded.verify())
        print(json.dumps(out))
        """
    )
    out = json.loads(result.stdout)
    expected = expected_scores(model, texts)
    for form in ("list", "column", "frame", "records", "columns", "string[pyarrow]", "object"):
        np.testing.assert_allclose(out[form], expected, rtol=0, atol=ATOL, err_msg=form)
    for form in ("fixed-width (n, 1)", "pyarrow"):
        np.testing.assert_allclose(out[form], expected, rtol=0, atol=ATOL, err_msg=form)
    np.testing.assert_allclose(out["one"], expected[:1], rtol=0, atol=ATOL)
    assert out["labels"] == list(le.inverse_transform((expected[:, 0] > 0.5).astype(int)))
    assert "Column 'review' has missing values (NaN/None) in 1 of 2 rows (row 1)" in out["missing"]
    assert out["verify"] is True


def test_a_scalar_text_input_without_an_example(tmp_path):
    """``shape=()`` (one string per sample, the other form Keras takes), no example: the
    contract is still one text column, named "text" when the input's name is made up."""
    import keras

    texts, _ = reviews(6, seed=2)
    keras.utils.set_random_seed(0)
    lookup = keras.layers.StringLookup(vocabulary=sorted({w for t in texts for w in t.split()}))
    inputs = keras.Input(shape=(), dtype="string")
    size = lookup.vocabulary_size()
    encoded = keras.layers.CategoryEncoding(num_tokens=size, output_mode="one_hot")(lookup(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(encoded))
    first = [t.split()[0] for t in texts]
    path = Bundle(model, name="words", version="1").save(tmp_path)
    loaded = Bundle.load(path)
    assert loaded.input_schema.to_dict()["columns"][0]["name"] == "text"
    np.testing.assert_allclose(
        loaded.predict(first), model(np.array(first, dtype=object)).numpy(), rtol=0, atol=ATOL
    )
    assert loaded.predict(first[0]).shape == (1, 2)


def test_a_string_lookup_next_to_a_number_in_a_multi_input_model(tmp_path):
    """A string input among others: stored as fixed-width unicode .npy, read back as str."""
    import keras

    cities = np.array([["Lisbon"], ["Oslo"], ["Rome"], ["Oslo"]])
    sizes = np.array([[1.0], [2.5], [0.5], [3.0]], "float32")
    keras.utils.set_random_seed(0)
    city = keras.Input(shape=(1,), dtype="string", name="city")
    size = keras.Input(shape=(1,), name="size")
    lookup = keras.layers.StringLookup(vocabulary=["Lisbon", "Oslo", "Rome"], output_mode="one_hot")
    merged = keras.layers.Concatenate()([lookup(city), size])
    model = keras.Model({"city": city, "size": size}, keras.layers.Dense(1)(merged))
    path = Bundle(model, input_example={"city": cities, "size": sizes}, name="m").save(tmp_path)
    stored = np.load(path / "example" / "input" / "city.npy", allow_pickle=False)
    assert stored.dtype.kind == "U" and stored.tolist() == cities.tolist()
    loaded = Bundle.load(path)
    got = loaded.predict({"city": [["Oslo"], ["Paris"]], "size": [[1.0], [2.0]]})
    want = model(
        {
            "city": np.array([["Oslo"], ["Paris"]], dtype=object),
            "size": np.array([[1.0], [2.0]], "float32"),
        }
    )
    np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=ATOL)
    assert loaded.verify()


def test_missing_texts_in_the_example_are_refused_with_what_to_do(classifier, tmp_path):
    model, _, _ = classifier
    with pytest.raises(SchemaError, match=r"Model input 'review' is a string tensor") as caught:
        Bundle(model, input_example=["good film", None], name="gaps").save(tmp_path)
    assert "fillna('')" in str(caught.value)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_missing_texts_replayed_as_training_filled_them(tmp_path):
    """Training filled missing reviews with "": a SimpleImputer step replays that (stored
    without pickle), so None is predicted exactly as the empty text."""
    import keras
    from sklearn.impute import SimpleImputer

    texts, _ = reviews(10, seed=7)
    frame = pd.DataFrame({"review": pd.Series([*texts[:9], None], dtype=object)})
    fill = SimpleImputer(strategy="constant", fill_value="", missing_values=None).fit(frame)
    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6)
    vectorize.adapt(texts)
    inputs = keras.Input(shape=(1,), dtype="string", name="review")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(40, 4)(vectorize(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(1)(pooled))
    path = Bundle(model, preprocess=fill, input_example=frame, name="filled").save(tmp_path)
    loaded = Bundle.load(path)  # the imputer is stored natively: no trusted=True
    got = loaded.predict([texts[0], None])
    np.testing.assert_allclose(got, expected_scores(model, [texts[0], ""]), rtol=0, atol=ATOL)


@pytest.mark.slow
def test_served_over_rest_and_grpc_as_bytes_tensors(classifier, tmp_path):
    pytest.importorskip("uvicorn")
    httpclient = pytest.importorskip("tritonclient.http")
    grpcclient = pytest.importorskip("tritonclient.grpc")
    import httpx
    from test_serve import start_server, wait_ready

    model, le, path = classifier
    texts, _ = reviews(5, seed=3)
    expected = expected_scores(model, texts)
    labels = list(le.inverse_transform((expected[:, 0] > 0.5).astype(int)))
    server = wait_ready(start_server(path, tmp_path / "server.log"))
    try:
        body = {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [5], "data": texts}]}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            meta = client.get("/v2/models/sentiment").json()
            answer = client.post("/v2/models/sentiment/infer", json=body).json()
            plain = client.post("/predict", json={"records": [{"review": t} for t in texts]})
        values = np.array(texts, dtype=object).reshape(5, 1)  # [n, 1] works too
        rest = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        tensor = httpclient.InferInput("review", [5, 1], "BYTES")
        tensor.set_data_from_numpy(values)  # binary data extension
        binary = rest.infer("sentiment", [tensor]).as_numpy("scores")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        tensor = grpcclient.InferInput("review", [5], "BYTES")
        tensor.set_data_from_numpy(values.reshape(5))
        reply = grpc.infer("sentiment", [tensor])
    finally:
        server.stop()
    assert meta["inputs"] == [{"name": "review", "datatype": "BYTES", "shape": [-1]}]
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["predictions"]["data"] == labels
    np.testing.assert_allclose(outputs["scores"]["data"], expected[:, 0], rtol=0, atol=ATOL)
    assert plain.json() == {"predictions": labels}
    np.testing.assert_allclose(binary, expected, rtol=0, atol=ATOL)
    assert [v.decode() for v in reply.as_numpy("predictions")] == labels
    np.testing.assert_allclose(reply.as_numpy("scores"), expected, rtol=0, atol=ATOL)


@pytest.mark.slow
@pytest.mark.skipif(BUNDLE is None, reason="the `bundle` script is not installed")
def test_cli_predict_scores_a_csv_of_texts(classifier, tmp_path):
    model, le, path = classifier
    texts, _ = reviews(6, seed=4)
    pd.DataFrame({"review": texts}).to_csv(tmp_path / "in.csv", index=False)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [BUNDLE, "predict", path, tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--scores"],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    out = pd.read_csv(tmp_path / "out.csv")
    expected = expected_scores(model, texts)
    assert list(out.columns) == ["prediction", "score"]
    assert list(out["prediction"]) == list(le.inverse_transform((expected[:, 0] > 0.5).astype(int)))
    np.testing.assert_allclose(out["score"], expected[:, 0], rtol=1e-6)


@pytest.mark.slow
def test_exported_savedmodel_takes_raw_strings_in_a_fresh_process(classifier, tmp_path):
    model, le, path = classifier
    texts, _ = reviews(5, seed=5)
    texts[0] = ""  # an empty text is a text here, not a missing value
    Bundle.load(path).export(tmp_path / "serving" / "1")
    result = run_python(
        f"""
        import json, tensorflow as tf
        loaded = tf.saved_model.load({str(tmp_path / "serving" / "1")!r})
        serve = loaded.signatures["serving_default"]
        print(json.dumps({{k: v.numpy().tolist() for k, v in serve(
            review=tf.constant({texts!r})).items()}}, default=lambda b: b.decode()))
        """
    )
    out = json.loads(result.stdout)
    expected = expected_scores(model, texts)
    np.testing.assert_allclose(out["scores"], expected, rtol=0, atol=ATOL)
    assert out["labels"] == list(le.inverse_transform((expected[:, 0] > 0.5).astype(int)))


@pytest.mark.slow
def test_spark_scores_a_string_column(classifier, spark, tmp_path):  # noqa: F811
    from bundle.spark import predict_udf, score

    model, le, path = classifier
    texts, _ = reviews(8, seed=6)
    df = spark.createDataFrame(pd.DataFrame({"id": range(8), "review": texts}))
    scored = score(df, str(path), id_cols=["id"]).toPandas().sort_values("id")
    expected = expected_scores(model, texts)
    labels = list(le.inverse_transform((expected[:, 0] > 0.5).astype(int)))
    assert list(scored["prediction"]) == labels
    np.testing.assert_allclose(scored["score"], expected[:, 0], rtol=0, atol=ATOL)
    udf = predict_udf(spark, str(path))
    column = df.withColumn("label", udf("review")).toPandas().sort_values("id")
    assert list(column["label"]) == labels
