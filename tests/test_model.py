"""The compiled inference function: same numbers as Keras, traced once, faster layers."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.model import inference_function, model_signature

SEED = 5


def _images(shape, n=9):
    return np.random.default_rng(SEED).integers(0, 256, size=(n, *shape)).astype("float32")


def _normalized_model(shape, **options):
    import keras

    data = _images(shape, 40)
    norm = keras.layers.Normalization(**options)
    if "mean" not in options:
        norm.adapt(data)
    inputs = keras.Input(shape)
    return keras.Model(inputs, norm(keras.layers.Rescaling(1 / 255.0)(inputs)))


CASES = {
    "per channel": ((6, 5, 3), {"axis": -1}),
    "per position": ((6, 5, 3), {"axis": (1, 2)}),
    "one mean": ((6, 5, 3), {"axis": None}),
    "inverted": ((6, 5, 3), {"axis": -1, "invert": True}),
    "given mean": ((6, 5, 3), {"axis": -1, "mean": [0.1, 0.2, 0.3], "variance": [1, 2, 3]}),
    "tabular": ((7,), {"axis": -1}),
}


def _keras_traced(model, shape):
    """The model traced as it is, with Keras' own layer calls: what the rewrite must equal."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *shape], tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


@pytest.mark.parametrize("case", list(CASES))
def test_normalization_is_bit_identical_to_keras(case):
    shape, options = CASES[case]
    model = _normalized_model(shape, **options)
    function = inference_function(model, model_signature(model)[0])
    reference = _keras_traced(model, shape)
    x = _images(shape)
    for rows in (x, x[:1]):
        np.testing.assert_array_equal(function(rows), reference(rows).numpy())
        # Graph optimizations may fuse a multiply-add that eager mode rounds twice.
        eager = model(rows, training=False).numpy()
        np.testing.assert_allclose(function(rows), eager, rtol=1e-6, atol=1e-6)


def test_normalization_broadcasts_a_whole_sample_in_the_traced_graph():
    model = _normalized_model((6, 5, 3), axis=-1)
    function = inference_function(model, model_signature(model)[0])
    function(_images((6, 5, 3)))
    graph = function._function.get_concrete_function().graph
    shapes = [
        tuple(op.outputs[0].shape) for op in graph.get_operations() if op.type == "BroadcastTo"
    ]
    assert (1, 6, 5, 3) in shapes
    norm = next(layer for layer in model.layers if type(layer).__name__ == "Normalization")
    assert "call" not in vars(norm)  # Keras' own call is back once traced
    x = _images((6, 5, 3))
    np.testing.assert_array_equal(norm(x).numpy(), type(norm).call(norm, x).numpy())


def test_normalization_in_a_nested_model_and_after_conv_layers():
    import keras

    inner = _normalized_model((8, 8, 3), axis=-1)
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Normalization(axis=-1, mean=[0.5] * 4, variance=[2.0] * 4)(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    function = inference_function(model, model_signature(model)[0])
    x = _images((8, 8, 3))
    np.testing.assert_allclose(function(x), model.predict(x, verbose=0), rtol=0, atol=1e-6)


def test_unknown_image_size_keeps_keras_call():
    import keras

    norm = keras.layers.Normalization(axis=-1, mean=[1.0, 2.0, 3.0], variance=[4.0, 5.0, 6.0])
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, norm(inputs))
    function = inference_function(model, model_signature(model)[0])
    for shape in ((4, 4, 3), (3, 7, 3)):
        x = _images(shape)
        np.testing.assert_array_equal(function(x), _keras_traced(model, shape)(x).numpy())


def test_weights_set_after_loading_reach_the_traced_function():
    model = _normalized_model((4, 4, 3), axis=-1)
    function = inference_function(model, model_signature(model)[0])
    x = _images((4, 4, 3))
    before = function(x)
    norm = model.layers[-1]
    norm.adapt(_images((4, 4, 3), 40) * 3.0 + 1000.0)
    fresh = inference_function(model, model_signature(model)[0])
    np.testing.assert_array_equal(fresh(x), _keras_traced(model, (4, 4, 3))(x).numpy())
    assert np.abs(fresh(x) - before).min() > 1.0


def test_a_subclassed_normalization_keeps_its_own_call():
    import keras

    class Shifted(keras.layers.Normalization):
        def call(self, inputs):
            return super().call(inputs) + 1.0

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, Shifted(axis=-1, mean=[1.0, 2.0, 3.0], variance=[1, 1, 1])(inputs))
    function = inference_function(model, model_signature(model)[0])
    x = _images((4, 4, 3))
    np.testing.assert_array_equal(function(x), _keras_traced(model, (4, 4, 3))(x).numpy())
    np.testing.assert_allclose(function(x), x - [1.0, 2.0, 3.0] + 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "bool"])
def test_narrow_inputs_are_cast_inside_the_graph_with_the_same_values(dtype):
    import keras

    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Normalization(axis=-1, mean=[0.4, 0.5, 0.6], variance=[0.1, 0.2, 0.3]),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    function = inference_function(model, model_signature(model)[0])
    raw = (_images((6, 6, 3)) % 2 == 1) if dtype == "bool" else _images((6, 6, 3))
    raw = raw.astype(dtype)
    np.testing.assert_array_equal(function(raw), function(raw.astype("float32")))
    assert set(function._functions) == {("float32",), (dtype,)}


def test_uint8_images_reach_the_model_uncast_and_predict_the_same(image_bundle, image_data):
    _, saved = image_bundle
    images, _ = image_data
    engine = saved._get_engine()
    prepared = engine.prepare(saved.input_schema.coerce(images))
    assert prepared.dtype == np.uint8  # cast by TensorFlow, inside the traced function
    as_float = engine.function()(images.astype("float32"))
    np.testing.assert_array_equal(saved.predict(images, batch_size=len(images)), as_float)


# ---------------------------------------------------------------------------- backends
def test_the_inference_function_is_the_running_backends():
    import keras

    from bundle.model.tf_backend import TensorFlowInference

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    function = inference_function(model, model_signature(model)[0])
    assert type(function) is TensorFlowInference and function.backend == "tensorflow"


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (1000, 1024), (1025, 2048), (5000, 4096)],
)
def test_jax_batches_are_padded_to_a_power_of_two_bucket(rows, bucket):
    from bundle.model.jax_backend import bucket_rows

    assert bucket_rows(rows, max_rows=4096) == bucket


@pytest.mark.parametrize(
    ("shape", "dtype", "rows"),
    [
        ([None, 108], "float32", 8192),  # 432 bytes a row: 9709 rows in 4 MiB
        ([None, 64, 64, 3], "float32", 64),  # 48 KiB a row: 85 rows
        ([None, 8, 8, 3], "float32", 4096),
        ([None, 2], "float32", 16384),  # capped
        ([None, 1024, 1024, 3], "float32", 1),  # one row is more than 4 MiB
    ],
)
def test_jax_largest_bucket_holds_about_4_mib_of_model_input(shape, dtype, rows):
    from bundle.model.jax_backend import max_rows_for

    assert max_rows_for([{"name": "x", "shape": shape, "dtype": dtype}]) == rows
