"""Releases made before keras-bundle: `bundle pack` and legacy model files.

A team's release is a legacy ``.h5`` model, a scaler pickled with joblib, a label encoder
pickled with pickle and a CSV of example rows. `bundle pack` (a fresh process) makes a
bundle of them, which a second fresh process loads without ``trusted=True`` and replays
exactly. A TensorFlow SavedModel, which Keras 3 only reads as a ``TFSMLayer`` reloading it
from its path, is refused with what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import run_python

import bundle
from bundle import Bundle, ModelError, UsageError

ATOL = 1e-6
BUNDLE = shutil.which("bundle", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(BUNDLE is None, reason="the `bundle` script is not installed")


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"tenure": rng.integers(0, 60, n).astype("float64"), "spend": rng.normal(50, 20, n)}
    )


def run(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [BUNDLE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The files of a release made without keras-bundle, and the model that made them."""
    import joblib
    import keras
    from sklearn.preprocessing import LabelEncoder, StandardScaler

    folder = tmp_path_factory.mktemp("release")
    frame = rows(1500, seed=0)
    target = np.where(frame["spend"] > 50, "stay", "churn")
    scaler = StandardScaler().fit(frame)
    labels = LabelEncoder().fit(target)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, "softmax"),
        ]
    )
    model.compile("adam", loss="sparse_categorical_crossentropy")
    model.fit(scaler.transform(frame), labels.transform(target), epochs=2, verbose=0)
    model.save(folder / "model.h5")  # the legacy HDF5 format
    joblib.dump(scaler, folder / "scaler.joblib")
    (folder / "labels.pkl").write_bytes(pickle.dumps(labels))
    frame.to_csv(folder / "rows.csv", index=False)
    return folder, model, scaler, labels


@pytest.mark.slow
def test_pack_an_h5_release_and_replay_it_in_a_fresh_process(release, tmp_path):
    folder, model, scaler, labels = release
    root = tmp_path / "churn"
    packed = run(
        "pack", root, "--model", folder / "model.h5", "--preprocess", folder / "scaler.joblib",
        "--postprocess", folder / "labels.pkl", "--example", folder / "rows.csv",
        "--name", "churn", "--version", "1.0.0", "--metadata", "auc=0.91",
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    assert f"Packed bundle 'churn' 1.0.0 into {root / '1.0.0'}" in packed.stdout
    assert "Unpickled 2 file(s), trusted as yours (unpickling runs code)" in packed.stderr
    assert "scaler.joblib" in packed.stderr and "labels.pkl" in packed.stderr
    manifest = json.loads((root / "1.0.0" / "manifest.json").read_text())
    assert [s["serializer"] for s in manifest["preprocess"] + manifest["postprocess"]] == [
        "native",
        "native",
    ]
    assert manifest["example"]["rows"] == 1000  # the first 1000 rows ...
    assert manifest["profile"]["rows"] == 1500  # ... and the whole file profiled
    assert manifest["metadata"]["auc"] == 0.91
    assert manifest["metadata"]["packed_from"]["model"] == "model.h5"
    fresh = rows(20, seed=1)
    fresh.to_parquet(tmp_path / "fresh.parquet")
    run_python(
        f"""
        import numpy as np, pandas as pd
        from bundle import Bundle
        loaded = Bundle.load({str(root)!r})       # pickle-free: no trusted=True
        frame = pd.read_parquet({str(tmp_path / "fresh.parquet")!r})
        np.save({str(tmp_path / "scores.npy")!r}, loaded.predict(frame, postprocess=False))
        np.save({str(tmp_path / "labels.npy")!r}, loaded.predict(frame).astype(str))
        assert loaded.verify()
        """
    )
    expected = model.predict(scaler.transform(fresh), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), expected, rtol=0, atol=ATOL)
    want = labels.inverse_transform(expected.argmax(axis=1)).astype(str)
    assert np.array_equal(np.load(tmp_path / "labels.npy"), want)


def test_a_tensorflow_savedmodel_is_refused_with_what_to_do(release, tmp_path):
    _, model, *_ = release
    model.export(str(tmp_path / "savedmodel"))
    refused = run("pack", tmp_path / "root", "--model", tmp_path / "savedmodel")
    assert refused.returncode == 1
    assert "is a TensorFlow SavedModel, not a Keras model file" in refused.stderr
    assert "Re-save it from the code that builds or loads it" in refused.stderr
    assert "model.save('model.keras')" in refused.stderr
    assert not (tmp_path / "root").exists()

    import keras

    wrapped = keras.Sequential(
        [keras.Input((2,)), keras.layers.TFSMLayer(str(tmp_path / "savedmodel"), name="graph")]
    )
    with pytest.raises(ModelError, match=r"Layer 'graph' of model .* is a TFSMLayer") as caught:
        Bundle(wrapped)
    assert str(tmp_path / "savedmodel") in str(caught.value)
    assert "Re-save it" in str(caught.value) and caught.value.layer == "graph"


def test_pack_refuses_files_it_cannot_read(release, tmp_path):
    folder, *_ = release
    (tmp_path / "notes.txt").write_text("not a pickle")
    with pytest.raises(UsageError, match=r"notes.txt: expected a joblib or pickle file"):
        bundle.pack(
            tmp_path / "root", model=folder / "model.h5", preprocess=[tmp_path / "notes.txt"]
        )
    with pytest.raises(UsageError, match=r"No model file at"):
        bundle.pack(tmp_path / "root", model=tmp_path / "missing.keras")
    with pytest.raises(UsageError, match=r"expected an import path like package.module:Name"):
        bundle.pack(tmp_path / "root", model=folder / "model.h5", custom_objects=["nocolon"])
