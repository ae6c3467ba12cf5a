"""TensorFlow backend: the forward pass as one traced ``tf.function`` per input dtype."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from .inference import REDUCED_PRECISION, InferenceFunction, to_numpy
from .keras_io import import_keras

__all__ = ["TensorFlowInference"]


class _OneTracePerFunction(logging.Filter):
    """Drop TensorFlow's "frequent retracing" warning about our inference functions.

    Each bundle traces its own function exactly once (a fixed signature with a free batch
    axis); TensorFlow's heuristic counts traces of every function built from the same code,
    so loading a few bundles in one process would print a misleading warning.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "triggered tf.function retracing" in message and "TensorFlowInference" in message
        )


def _quiet_retracing_warning() -> None:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _OneTracePerFunction) for f in logger.filters):
        logger.addFilter(_OneTracePerFunction())


@contextlib.contextmanager
def _per_sample_broadcasts(model: Any) -> Any:
    """While tracing `model`, its Normalization layers broadcast mean and variance per sample.

    A Normalization layer over images keeps one mean and variance per channel, shaped
    ``(1, 1, 1, C)``. TensorFlow's CPU kernels broadcast such a tensor across a batch of
    ``(N, H, W, C)`` element by element, at half the speed of broadcasting a whole sample
    ``(1, H, W, C)`` across the batch axis; on a small conv net that made the two
    elementwise layers cost more than the convolutions. Here the layers compute the same
    operations, in the same order and dtype, on mean and denominator broadcast to one whole
    sample first, so results are bit-identical (tested) and follow later weight updates.
    Inputs whose per-sample shape is not fully known keep Keras' own ``call``.
    """
    keras = import_keras()
    patched = [  # Keras' own class only: a subclass may compute something else
        layer
        for layer in _all_layers(model)
        if type(layer) is keras.layers.Normalization and "call" not in vars(layer)
    ]
    for layer in patched:
        # An instance attribute: Layer.__call__ looks `call` up on the instance.
        layer.call = functools.partial(_normalization_call, layer)
    try:
        yield
    finally:
        for layer in patched:
            vars(layer).pop("call", None)


def _all_layers(model: Any) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=True, recursive=True))
    return [model, *getattr(model, "layers", [])]


def _normalization_call(layer: Any, inputs: Any) -> Any:
    """``Normalization.call`` with mean and denominator broadcast to a whole sample first."""
    sample_shape = tuple(getattr(inputs, "shape", ())[1:])
    if layer.mean is None or not sample_shape or any(d is None for d in sample_shape):
        return type(layer).call(layer, inputs)
    whole = (1, *(int(d) for d in sample_shape))
    if not _broadcasts_to(tuple(layer.mean.shape), whole):  # e.g. a mean per batch index
        return type(layer).call(layer, inputs)
    np_ops = layer.backend.numpy
    inputs = layer.backend.core.convert_to_tensor(inputs, dtype=layer.compute_dtype)
    mean = layer.convert_weight(layer.mean)
    variance = layer.convert_weight(layer.variance)
    denominator = np_ops.maximum(np_ops.sqrt(variance), import_keras().backend.epsilon())
    mean = np_ops.broadcast_to(mean, whole)
    denominator = np_ops.broadcast_to(denominator, whole)
    if layer.invert:
        return np_ops.add(mean, np_ops.multiply(inputs, denominator))
    return np_ops.divide(np_ops.subtract(inputs, mean), denominator)


def _broadcasts_to(shape: tuple[Any, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


class TensorFlowInference(InferenceFunction):
    """The forward pass as one traced TensorFlow function per input dtype.

    Traced for a batch axis of unknown size, so neither a new batch size nor a new call
    retraces it; this is what makes one-row calls cost a fraction of a millisecond instead
    of ``Model.predict``'s per-call set-up. Inputs of a narrower dtype that converts exactly
    (uint8 images for a float32 model) get their own trace, which casts inside the graph:
    TensorFlow's cast runs on every core, NumPy's on one, and the values are the same.
    """

    backend = "tensorflow"

    def __init__(self, model: Any, inputs: list[dict[str, Any]]):
        _quiet_retracing_warning()
        self._concrete: dict[int, Any] = {}
        super().__init__(model, inputs)

    def _build(self, dtypes: tuple[str, ...]) -> Any:
        """A tf.function for inputs of `dtypes`, traced by TensorFlow on its first call."""
        import tensorflow as tf

        model, inputs = self.model, self.inputs
        specs = {  # texts arrive as object arrays of str: tf.string
            spec["name"]: tf.TensorSpec(spec["shape"], tf.string if dtype == "object" else dtype)
            for spec, dtype in zip(inputs, dtypes, strict=True)
        }
        signature = [specs] if self.multi_input else list(specs.values())

        def to_model_dtype(t: Any, spec: Mapping[str, Any]) -> Any:
            return t if t.dtype == spec["dtype"] else tf.cast(t, spec["dtype"])

        def forward(x: Any) -> Any:  # runs once, while TensorFlow traces it
            if self.multi_input:
                x = {spec["name"]: to_model_dtype(x[spec["name"]], spec) for spec in inputs}
            else:
                x = to_model_dtype(x, inputs[0])
            with _per_sample_broadcasts(model):
                result = model(x, training=False)
            # Reduced-precision clones compute in float16/bfloat16; callers get float32.
            return tf.nest.map_structure(
                lambda t: tf.cast(t, tf.float32) if t.dtype.name in REDUCED_PRECISION else t,
                result,
            )

        return tf.function(forward, input_signature=signature, autograph=False)

    def _run(self, function: Any, x: Any) -> Any:
        concrete = self._concrete.get(id(function))
        if concrete is None:
            # The traced graph itself: calling it skips tf.function's per-call dispatch
            # (matching the arguments to the signature), 40% of a one-row call.
            concrete = self._concrete.setdefault(id(function), function.get_concrete_function())
        return to_numpy(concrete(x), _tensor_to_numpy)


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A result tensor as NumPy; strings (``tf.string``: bytes) as Python ``str``."""
    array = tensor.numpy()
    if array.dtype == object:
        decoded = np.empty(array.shape, dtype=object)
        decoded.ravel()[:] = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel()
        ]
        return decoded
    return array
