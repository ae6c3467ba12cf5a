"""Safe-by-default loading: nothing stored in a bundle runs unless the caller trusts it."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from conftest import run_python

from bundle import Bundle, UnsafeLoadError
from bundle.format.integrity import hash_file


def _rehash(version_dir, relative):
    """Update the manifest's record of one file, as an attacker with write access would."""
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][relative] = {
        "sha256": hash_file(version_dir / relative),
        "size": (version_dir / relative).stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest))
    return manifest


def test_native_bundle_loads_without_trusted(tabular_bundle, tabular_data):
    path, saved = tabular_bundle
    manifest = json.loads((path / "manifest.json").read_text())
    assert [s["serializer"] for s in manifest["preprocess"] + manifest["postprocess"]] == [
        "native",
        "native",
    ]
    assert not any(s["executes_code"] for s in manifest["preprocess"] + manifest["postprocess"])
    assert manifest["model"]["executes_code"] is False
    loaded = Bundle.load(path)  # no flag
    frame, _ = tabular_data
    np.testing.assert_allclose(
        loaded.predict(frame, postprocess=False), saved.predict(frame, postprocess=False), atol=1e-6
    )


def test_pickled_step_is_refused_and_listed(tmp_path):
    import keras
    from sklearn.preprocessing import FunctionTransformer

    X = np.random.default_rng(0).normal(size=(30, 3))
    step = FunctionTransformer(lambda x: x * 2).fit(X)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    path = Bundle(model, preprocess=step, input_example=X, name="lam").save(tmp_path / "r")
    with pytest.raises(UnsafeLoadError) as err:
        Bundle.load(path)
    message = str(err.value)
    assert "Refusing to load bundle 'lam' 1: 1 part(s) are pickles" in message
    assert "steps/000-pre-functiontransformer.pkl: a cloudpickle pickle of " in message
    assert "sklearn.preprocessing.FunctionTransformer" in message
    assert "Bundle.load(path, trusted=True)" in message
    assert err.value.parts[0][0] == "steps/000-pre-functiontransformer.pkl"
    assert err.value.parts[0][1] == "cloudpickle"
    assert Bundle.load(path, trusted=True).predict(X[:2]).shape == (2, 1)


def test_lambda_layer_needs_trusted(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 3)])
    path = Bundle(model, input_example=np.ones((2, 2), "float32")).save(tmp_path / "l")
    assert json.loads((path / "manifest.json").read_text())["model"]["executes_code"] is True
    with pytest.raises(
        UnsafeLoadError,
        match=r"model\.keras: a keras pickle of a Keras model "
        r"with Lambda layers",
    ):
        Bundle.load(path)
    np.testing.assert_allclose(Bundle.load(path, trusted=True).predict([[1.0, 2.0]]), [[3.0, 6.0]])


class _Planted:
    """Unpickling this touches a file: the side effect the refusal must prevent."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_malicious_pickle_has_no_side_effect(tabular_bundle, bundle_copy, tmp_path):
    path, _ = tabular_bundle
    copy = bundle_copy(path)
    marker = tmp_path / "pwned"
    # Replace the native postprocess step with a pickle that creates `marker` when loaded,
    # and make the manifest agree with it (hash, serializer), so only the trust check stands.
    target = "steps/000-post-labelencoder.joblib"
    (copy / target).write_bytes(pickle.dumps(_Planted(str(marker))))
    manifest = _rehash(copy, target)
    record = manifest["postprocess"][0]
    old = record["file"]
    del manifest["files"][old]
    (copy / old).unlink()
    record.update(file=target, serializer="joblib", executes_code=True, imports=["builtins.open"])
    (copy / "manifest.json").write_text(json.dumps(manifest))

    result = run_python(
        f"""
        from bundle import Bundle, UnsafeLoadError
        try:
            Bundle.load({str(copy)!r})
        except UnsafeLoadError as exc:
            print("REFUSED", exc.parts)
        """
    )
    assert "REFUSED" in result.stdout and "000-post-labelencoder.joblib" in result.stdout
    assert "builtins.open" in result.stdout
    assert not marker.exists()


def test_manifest_lying_about_a_pickle_is_caught_by_the_native_reader(
    tabular_bundle, bundle_copy, tmp_path
):
    """A pickle relabelled as a native step is never unpickled: .npz is read without pickle."""
    path, _ = tabular_bundle
    copy = bundle_copy(path)
    marker = tmp_path / "pwned"
    target = "steps/000-post-labelencoder.npz"
    (copy / target).write_bytes(pickle.dumps(_Planted(str(marker))))
    _rehash(copy, target)
    result = run_python(
        f"""
        from bundle import Bundle, BundleError
        try:
            Bundle.load({str(copy)!r})
        except BundleError as exc:
            print("REFUSED", type(exc).__name__)
        """,
        check=False,
    )
    assert "REFUSED" in result.stdout, result.stderr[-2000:]
    assert not marker.exists()
