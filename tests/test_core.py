"""Bundle: save, load in a fresh process, predict exactly as training did."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular_frame, run_python

from bundle import Bundle, BundleError, SchemaError

ATOL = 1e-6


def test_tabular_round_trip_in_fresh_process(tabular_bundle, tabular_parts, tmp_path):
    path, _ = tabular_bundle
    preprocess, labels, model = tabular_parts
    frame, _ = make_tabular_frame(300, seed=1)
    frame.to_parquet(tmp_path / "rows.parquet")
    expected_scores = model.predict(preprocess.transform(frame), verbose=0)
    expected_labels = labels.inverse_transform(expected_scores.argmax(axis=1))

    run_python(
        f"""
        import numpy as np, pandas as pd
        from bundle import Bundle
        loaded = Bundle.load({str(path)!r}, trusted=True)
        rows = pd.read_parquet({str(tmp_path / "rows.parquet")!r})
        np.save({str(tmp_path / "scores.npy")!r}, loaded.predict(rows, postprocess=False))
        np.save({str(tmp_path / "labels.npy")!r}, loaded.predict(rows).astype(str))
        """
    )
    scores = np.load(tmp_path / "scores.npy")
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=ATOL)
    assert np.array_equal(np.load(tmp_path / "labels.npy"), expected_labels.astype(str))


def test_image_round_trip_in_fresh_process(image_bundle, image_parts, image_data, tmp_path):
    path, _ = image_bundle
    images, _ = image_data
    expected = image_parts.predict(images.astype("float32"), verbose=0)
    np.save(tmp_path / "images.npy", images)
    run_python(
        f"""
        import numpy as np
        from bundle import Bundle
        loaded = Bundle.load({str(path)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        np.save({str(tmp_path / "out.npy")!r}, loaded.predict(images))
        np.save({str(tmp_path / "one.npy")!r}, loaded.predict(images[0]))
        """
    )
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=ATOL)
    one = np.load(tmp_path / "one.npy")
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one[0], expected[0], rtol=0, atol=ATOL)


def test_standardized_rgb_images_round_trip_in_fresh_process(tmp_path):
    """Rescaling + an adapted per-channel Normalization: the layers the compiled path rewrites."""
    import keras

    from bundle import Bundle

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(48, 16, 16, 3), dtype=np.uint8)
    labels = (images[..., 0].mean(axis=(1, 2)) > images[..., 2].mean(axis=(1, 2))).astype(int)
    keras.utils.set_random_seed(3)
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(images.astype("float32") / 255.0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 255.0),
            norm,
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images.astype("float32"), labels, epochs=1, verbose=0)
    expected = model.predict(images.astype("float32"), verbose=0)
    path = Bundle(model, input_example=images[:8], name="rgb").save(tmp_path / "models")
    np.save(tmp_path / "images.npy", images)
    run_python(
        f"""
        import numpy as np
        from bundle import Bundle
        loaded = Bundle.load({str(path)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        np.save({str(tmp_path / "out.npy")!r}, loaded.predict(images, batch_size=20))
        """
    )
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=ATOL)


def test_training_script_with_main_lambda_and_list_of_steps(tmp_path):
    """A FunctionTransformer lambda and a custom loss from __main__, then a fresh loader."""
    run_python(
        f"""
        import numpy as np, keras
        from sklearn.preprocessing import FunctionTransformer, StandardScaler
        from bundle import Bundle
        rng = np.random.default_rng(0)
        X = rng.normal(size=(200, 5)) * 10
        y = (X[:, 0] > 0).astype("float32")
        clip = FunctionTransformer(lambda x: np.clip(x, -15, 15)).fit(X)
        scale = StandardScaler().fit(clip.transform(X))
        def my_loss(t, p):
            return keras.losses.binary_crossentropy(t, p)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", loss=my_loss)
        model.fit(scale.transform(clip.transform(X)), y, epochs=2, verbose=0)
        Bundle(model, preprocess=[clip, scale], input_example=X[:20], name="lam").save(
            {str(tmp_path / "root")!r})
        np.save({str(tmp_path / "X.npy")!r}, X)
        np.save({str(tmp_path / "expected.npy")!r},
                model.predict(scale.transform(clip.transform(X)), verbose=0))
        """
    )
    manifest = json.loads((tmp_path / "root" / "1" / "manifest.json").read_text())
    assert [s["serializer"] for s in manifest["preprocess"]] == ["cloudpickle", "native"]
    run_python(
        f"""
        import numpy as np
        from bundle import Bundle
        loaded = Bundle.load({str(tmp_path / "root")!r}, trusted=True)
        np.save({str(tmp_path / "got.npy")!r}, loaded.predict(np.load({str(tmp_path / "X.npy")!r})))
        """
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "got.npy"), np.load(tmp_path / "expected.npy"), rtol=0, atol=ATOL
    )


def test_predict_in_memory_equals_loaded(tabular_bundle, tabular_data):
    path, saved = tabular_bundle
    frame, _ = tabular_data
    loaded = Bundle.load(path, trusted=True)
    np.testing.assert_allclose(
        loaded.predict(frame, postprocess=False),
        saved.predict(frame, postprocess=False),
        rtol=0,
        atol=ATOL,
    )
    assert list(loaded.predict(frame)) == list(saved.predict(frame))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_batch_size_does_not_change_results(tabular_bundle, tabular_data, batch_size):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    one_pass = saved.predict(frame, postprocess=False, batch_size=len(frame))
    chunked = saved.predict(frame, postprocess=False, batch_size=batch_size)
    np.testing.assert_array_equal(chunked, one_pass)


def test_bad_batch_size_is_refused(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    with pytest.raises(ValueError, match="batch_size must be a positive number of rows; got 0"):
        saved.predict(tabular_data[0], batch_size=0)


def test_read_only_views(tabular_bundle):
    path, _ = tabular_bundle
    loaded = Bundle.load(path, trusted=True)
    assert loaded.manifest.name == "churn" and loaded.manifest.version == "1.0.0"
    assert loaded.manifest.metadata == {"auc": 0.91}
    assert loaded.model.output_shape == (None, 3)
    assert loaded.path == path
    with pytest.raises(TypeError):
        loaded.metadata["auc"] = 1.0
    with pytest.raises(AttributeError):
        loaded.manifest = None
    assert "churn" in repr(loaded) and "1.0.0" in repr(loaded)


def test_unsaved_bundle_has_no_manifest(tabular_parts):
    _, _, model = tabular_parts
    with pytest.raises(BundleError, match=r"has not been saved yet.*save\(root\)"):
        _ = Bundle(model).manifest


def test_empty_input_gives_empty_result_of_the_right_shape(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    scores = saved.predict(frame.iloc[:0], postprocess=False)
    assert scores.shape == (0, 3) and scores.dtype == np.float32
    assert len(saved.predict(frame.iloc[:0])) == 0


def test_sigmoid_output_is_thresholded_into_labels(tmp_path):
    import keras
    from sklearn.preprocessing import LabelEncoder, StandardScaler

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    scaler, labels = StandardScaler().fit(X), LabelEncoder().fit(y)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(scaler.transform(X), labels.transform(y), epochs=3, verbose=0)
    bundle = Bundle(model, preprocess=scaler, postprocess=labels, input_example=X[:10])
    scores = bundle.predict(X, postprocess=False)
    expected = labels.inverse_transform((scores[:, 0] > 0.5).astype(int))
    assert list(bundle.predict(X)) == list(expected)
    loaded = Bundle.load(bundle.save(tmp_path / "bin"))
    assert list(loaded.predict(X)) == list(expected)


def test_target_scaler_returns_original_units(tmp_path):
    import keras
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 4))
    y = (X @ [3.0, -2.0, 1.0, 0.5] * 1000 + 50_000).reshape(-1, 1)
    x_scaler, y_scaler = StandardScaler().fit(X), StandardScaler().fit(y)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(x_scaler.transform(X), y_scaler.transform(y), epochs=3, verbose=0)
    bundle = Bundle(model, preprocess=x_scaler, postprocess=y_scaler, input_example=X[:10])
    raw = model.predict(x_scaler.transform(X), verbose=0)
    expected = y_scaler.inverse_transform(raw)
    loaded = Bundle.load(bundle.save(tmp_path / "reg"))
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=1e-6)
    assert loaded.manifest.postprocess[0]["mode"] == "inverse_transform"


def test_multi_input_model_takes_a_dict(tmp_path):
    import keras

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 3)).astype("float32"), rng.normal(size=(50, 2)).astype("float32")
    in_a, in_b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([in_a, in_b]))
    model = keras.Model([in_a, in_b], out)
    expected = model.predict({"a": a, "b": b}, verbose=0)
    bundle = Bundle(model, input_example={"a": a[:5], "b": b[:5]}, name="two")
    loaded = Bundle.load(bundle.save(tmp_path / "two"))
    np.testing.assert_allclose(loaded.predict({"a": a, "b": b}), expected, rtol=0, atol=ATOL)
    with pytest.raises(SchemaError, match="b"):
        loaded.predict({"a": a})


def test_not_fitted_preprocess_is_refused(tabular_parts):
    from sklearn.preprocessing import StandardScaler

    _, _, model = tabular_parts
    with pytest.raises(ValueError, match=r"preprocess\[0\] \(StandardScaler\) is not fitted"):
        Bundle(model, preprocess=StandardScaler())


def test_postprocess_without_inverse_transform_is_refused(tabular_parts):
    _, _, model = tabular_parts
    with pytest.raises(TypeError, match=r"postprocess\[0\] must be a fitted object with a "):
        Bundle(model, postprocess=object())


# ---------------------------------------------------------------- input basics (issue 2.9)
def test_columns_are_reordered_by_name(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(
        saved.predict(shuffled, postprocess=False), saved.predict(frame, postprocess=False)
    )


def test_missing_column_is_named(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    with pytest.raises(SchemaError, match="income"):
        saved.predict(frame.drop(columns=["income"]))


def test_int_and_float64_input_is_cast(image_bundle, image_parts, image_data):
    _, saved = image_bundle
    images, _ = image_data
    expected = image_parts.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(saved.predict(images.astype("int64")), expected, atol=ATOL)


def test_wrong_feature_count_names_both_shapes(image_bundle, image_data):
    _, saved = image_bundle
    images, _ = image_data
    with pytest.raises(SchemaError, match=r"\(8, 8, 1\)") as err:
        saved.predict(images[:, :7])
    assert "(4, 7, 8, 1)" in str(err.value) or "7, 8, 1" in str(err.value)


def test_records_and_single_row_dict(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    expected = saved.predict(frame.iloc[:3], postprocess=False)
    records = frame.iloc[:3].to_dict(orient="records")
    np.testing.assert_allclose(saved.predict(records, postprocess=False), expected, atol=ATOL)
    one = saved.predict(records[0], postprocess=False)
    np.testing.assert_allclose(one, expected[:1], atol=ATOL)
    one_series = saved.predict(frame.iloc[0], postprocess=False)
    np.testing.assert_allclose(one_series, expected[:1], atol=ATOL)


def test_dataframe_with_nullable_dtypes(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    nullable = frame.iloc[:20].convert_dtypes()
    assert isinstance(nullable["visits"].dtype, pd.Int64Dtype)
    np.testing.assert_allclose(
        saved.predict(nullable, postprocess=False),
        saved.predict(frame.iloc[:20], postprocess=False),
        atol=ATOL,
    )


def test_decode_turns_scores_into_the_predictions(tabular_bundle, tabular_data):
    _, saved = tabular_bundle
    frame, _ = tabular_data
    scores = saved.predict(frame, postprocess=False)
    assert list(saved.decode(scores)) == list(saved.predict(frame))
