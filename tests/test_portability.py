"""Finding code that ties a model to one Keras backend (bundle/model/portability.py).

The analysis reads bytecode and runs nothing, so every backend's case is checked here, in
the TensorFlow test process, by naming the backend to check against. Running such bundles
on the other backends is tests/test_backends.py's job.
"""

from __future__ import annotations

import jax.numpy as jnp
import keras
import numpy as np
import pytest
import tensorflow as tf

from bundle import BackendError, Bundle
from bundle.model import portability_problems


def tf_helper(x):
    return tf.math.tanh(x)


class TfLayer(keras.layers.Layer):
    def call(self, x):
        return tf.math.tanh(x) * 2.0


class JaxLayer(keras.layers.Layer):
    def call(self, x):
        return jnp.tanh(x)

    def compute_output_shape(self, input_shape):
        return input_shape


class ViaMethod(keras.layers.Layer):
    def call(self, x):
        return self._activate(x)

    def _activate(self, x):
        return tf.nn.relu(x)


class ViaFunction(keras.layers.Layer):
    def call(self, x):
        return tf_helper(x) + 1.0


class BranchesOnBackend(keras.layers.Layer):
    def call(self, x):
        if keras.backend.backend() == "tensorflow":
            return tf.math.tanh(x)
        return keras.ops.tanh(x)


class Portable(keras.layers.Layer):
    def call(self, x):
        return keras.ops.tanh(x) * 2.0


class OnlyAdaptUsesTensorFlow(keras.layers.Layer):
    """TensorFlow outside the forward pass (a data utility) does not tie the layer."""

    def call(self, x):
        return keras.ops.tanh(x)

    def adapt(self, data):
        return tf.data.Dataset.from_tensor_slices(data)


def tf_loss(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_true - y_pred))


def tf_activation(x):
    return tf.math.softplus(x)


squash = lambda x: tf.math.tanh(x)  # noqa: E731 -- a Lambda layer's usual form


def problems_of(obj, backend, kind="layer"):
    return [
        (p.backend, p.uses)
        for p in portability_problems(
            backend=backend, custom_objects={"obj": obj}, kinds={"obj": kind}
        )
    ]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_layer_calling_tensorflow_needs_tensorflow(backend):
    (problem,) = portability_problems(
        backend=backend, custom_objects={"TfLayer": TfLayer}, kinds={"TfLayer": "layer"}
    )
    assert problem.part == "custom layer 'TfLayer' (test_portability.TfLayer)"
    assert problem.backend == "tensorflow"
    assert problem.uses == "tf.math.tanh in TfLayer.call"
    assert str(problem) == (
        "custom layer 'TfLayer' (test_portability.TfLayer) calls tf.math.tanh in "
        "TfLayer.call: it needs TensorFlow"
    )


def test_the_backend_a_layer_was_written_for_is_not_a_problem():
    assert problems_of(TfLayer, "tensorflow") == []
    assert problems_of(JaxLayer, "jax") == []
    assert problems_of(JaxLayer, "tensorflow") == [("jax", "jnp.tanh in JaxLayer.call")]


def test_methods_and_functions_that_call_reaches_are_followed():
    assert problems_of(ViaMethod, "jax") == [("tensorflow", "tf.nn.relu in ViaMethod._activate")]
    assert problems_of(ViaFunction, "jax") == [("tensorflow", "tf.math.tanh in tf_helper")]


def test_portable_and_backend_aware_code_is_not_flagged():
    assert problems_of(Portable, "jax") == []
    assert problems_of(BranchesOnBackend, "jax") == []
    assert problems_of(OnlyAdaptUsesTensorFlow, "jax") == []


def test_training_only_custom_objects_are_not_checked():
    assert problems_of(tf_loss, "jax", kind="loss") == []
    assert problems_of(tf_loss, "jax", kind="metric") == []
    assert problems_of(tf_activation, "jax", kind="activation") == [
        ("tensorflow", "tf.math.softplus in tf_activation")
    ]


def test_keras_layers_that_run_tensorflow_ops_are_named():
    inputs = keras.Input((1,), dtype="int64")
    lookup = keras.layers.IntegerLookup(vocabulary=[3, 5, 7], name="codes")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.ops.cast(lookup(inputs), "float32")))
    assert portability_problems(backend="tensorflow", model=model) == []
    (problem,) = portability_problems(backend="jax", model=model)
    assert (
        problem.part
        == "layer 'codes' (keras.src.layers.preprocessing.integer_lookup.IntegerLookup)"
    )
    assert (problem.backend, problem.uses) == (
        "tensorflow",
        "TensorFlow ops in IntegerLookup.call",
    )


def test_lambda_functions_and_custom_activations_in_a_loaded_model_are_read():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Lambda(squash, name="squash"),
            keras.layers.Dense(2, activation=tf_activation, name="head"),
        ]
    )
    found = {(p.part, p.uses) for p in portability_problems(backend="torch", model=model)}
    assert found == {
        ("layer 'squash' (Lambda <lambda>)", "tf.math.tanh in <lambda>"),
        ("activation 'tf_activation' of layer 'head'", "tf.math.softplus in tf_activation"),
    }


def test_a_model_that_fails_on_another_backend_library_at_save_is_explained(tmp_path):
    """On TensorFlow, a layer calling jax.numpy fails when the example runs: BackendError."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), JaxLayer(name="jaxy"), keras.layers.Dense(1)])
    expected = (
        "The model 'sequential.*' cannot run on TensorFlow, the backend Keras runs on here: 1 "
        r"part\(s\) of the model call another backend's library directly:\n"
        r"- layer 'jaxy' \(test_portability.JaxLayer\) calls jnp.tanh in JaxLayer.call: it "
        r"needs JAX\nLoad it in a process where Keras runs on JAX \(KERAS_BACKEND=jax\)"
    )
    with pytest.raises(BackendError, match=expected) as caught:
        Bundle(model, input_example=x, name="jaxy").save(tmp_path)
    assert (caught.value.needs, caught.value.running) == (["jax"], "tensorflow")
    assert caught.value.__cause__ is not None
    assert not list(tmp_path.rglob("manifest.json"))  # nothing was published
