"""Keras model save/load, its input/output signature, and the compiled inference function.

This is the only module that imports Keras and TensorFlow, and it does so lazily, so that
reading or verifying a bundle never pays for them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError

__all__ = ["InferenceFunction", "load_model", "model_signature", "save_model"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_keras() -> Any:
    """Import Keras (and TensorFlow), after pyarrow.

    pyarrow and TensorFlow bundle their own copies of native libraries; importing pyarrow's
    Parquet reader after TensorFlow has crashed processes in several version combinations
    (apache/arrow#1450, #2637), and bundles read Parquet examples and files.
    """
    importlib.import_module("pyarrow.parquet")
    return importlib.import_module("keras")


def save_model(model: Any, path: Path) -> None:
    """Save `model` in the Keras v3 native format (``.keras``)."""
    try:
        model.save(str(path))
    except Exception as exc:
        raise BundleError(
            f"Keras could not save the model: {type(exc).__name__}: {exc}\n"
            "Subclassed layers and models need a get_config() returning their constructor "
            "arguments (see keras.io/guides/serialization_and_saving)."
        ) from exc


def load_model(path: Path, custom_objects: Mapping[str, Any], *, safe_mode: bool) -> Any:
    """Load a ``.keras`` file with the given custom objects, compiled as it was saved."""
    keras = import_keras()
    try:
        return keras.saving.load_model(
            str(path), custom_objects=dict(custom_objects), compile=True, safe_mode=safe_mode
        )
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            from .errors import UnsafeLoadError

            raise UnsafeLoadError(
                f"Refusing to load {Path(path).name}: the model contains a Lambda layer whose "
                "Python code is stored in the file, and deserializing it runs that code.\n"
                "If you made this bundle or trust its source: Bundle.load(path, trusted=True).",
                parts=[(Path(path).name, "keras", ["keras.layers.Lambda"])],
            ) from exc
        raise BundleError(f"Keras could not load {Path(path).name}: {exc}") from exc
    except TypeError as exc:
        raise BundleError(
            f"Keras could not load {Path(path).name}: {exc}\n"
            "A custom object is probably missing: pass it with custom_objects= when saving."
        ) from exc


def _tensor_spec(tensor: Any, fallback_name: str) -> dict[str, Any]:
    name = getattr(tensor, "name", None) or fallback_name
    shape = [None if dim is None else int(dim) for dim in tensor.shape]
    return {"name": str(name), "shape": shape, "dtype": str(np.dtype(tensor.dtype).name)}


def model_signature(model: Any, sample_input: Any = None) -> tuple[list[dict], list[dict]]:
    """The model's inputs and outputs as ``[{name, shape, dtype}]``, batch axis ``None``.

    Functional and Sequential models know their signature; a subclassed model is called
    once on `sample_input` (the preprocessed example) to learn it.
    """
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs, outputs = [], []
    if inputs and outputs:
        output_names = list(getattr(model, "output_names", None) or [])
        output_specs = [_tensor_spec(t, f"output_{i}") for i, t in enumerate(outputs)]
        if len(output_names) == len(output_specs):
            output_specs = [
                {**spec, "name": name}
                for spec, name in zip(output_specs, output_names, strict=True)
            ]
        return [_tensor_spec(t, f"input_{i}") for i, t in enumerate(inputs)], output_specs
    if sample_input is None:
        raise BundleError(
            "The model is subclassed and not built, so its input signature is unknown.\n"
            "Pass input_example= (raw training rows) so the bundle can call it once."
        )
    return _signature_from_call(model, sample_input)


def _signature_from_call(model: Any, sample_input: Any) -> tuple[list[dict], list[dict]]:
    def spec(name: str, array: Any) -> dict[str, Any]:
        array = np.asarray(array)
        return {"name": name, "shape": [None, *array.shape[1:]], "dtype": array.dtype.name}

    if isinstance(sample_input, Mapping):
        inputs = [spec(name, value) for name, value in sample_input.items()]
    else:
        inputs = [spec("input_0", sample_input)]
    result = model(sample_input, training=False)
    if isinstance(result, Mapping):
        outputs = [spec(name, value) for name, value in result.items()]
    elif isinstance(result, (list, tuple)):
        outputs = [spec(f"output_{i}", value) for i, value in enumerate(result)]
    else:
        outputs = [spec("output_0", result)]
    return inputs, outputs


PRECISIONS = ("float32", "float16", "bfloat16")


class _OneTracePerFunction(logging.Filter):
    """Drop TensorFlow's "frequent retracing" warning about our inference functions.

    Each bundle traces its own function exactly once (a fixed signature with a free batch
    axis); TensorFlow's heuristic counts traces of every function built from the same code,
    so loading a few bundles in one process would print a misleading warning.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "InferenceFunction" in message)


def _quiet_retracing_warning() -> None:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _OneTracePerFunction) for f in logger.filters):
        logger.addFilter(_OneTracePerFunction())


def reduced_precision(
    model: Any, precision: str, custom_objects: Mapping[str, Any] | None = None
) -> Any:
    """A copy of `model` whose layers compute and hold their weights in `precision`.

    Works for Sequential and functional models (rebuilt layer by layer from their configs
    with a new dtype policy); inputs are cast by Keras, outputs cast back to float32 by the
    inference function.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    keras = import_keras()

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = precision
        return layer.__class__.from_config(config)

    try:
        # Cloning rebuilds the compile config too, which names the custom objects.
        with keras.saving.custom_object_scope(dict(custom_objects or {})):
            clone = keras.models.clone_model(model, clone_function=clone_layer)
    except Exception as exc:
        raise BundleError(
            f"Cannot run {type(model).__name__} in {precision}: {exc}\n"
            "Reduced precision needs a Sequential or functional model."
        ) from exc
    clone.set_weights(model.get_weights())
    return clone


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
    denominator = np_ops.maximum(np_ops.sqrt(variance), _keras_epsilon())
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


def _keras_epsilon() -> float:
    """Keras' fuzz factor (``keras.backend.epsilon()``)."""
    return import_keras().backend.epsilon()


class InferenceFunction:
    """The model's forward pass as one traced TensorFlow function per input dtype.

    Traced for a batch axis of unknown size, so neither a new batch size nor a new call
    retraces it; this is what makes one-row calls cost a fraction of a millisecond instead
    of ``Model.predict``'s per-call set-up. Inputs of a narrower dtype that converts exactly
    (uint8 images for a float32 model) get their own trace, which casts inside the graph:
    TensorFlow's cast runs on every core, NumPy's on one, and the values are the same.
    """

    def __init__(self, model: Any, inputs: list[dict[str, Any]]):
        import_keras()
        _quiet_retracing_warning()
        self.model = model
        self.inputs = inputs
        self.multi_input = len(inputs) > 1
        own = tuple(np.dtype(spec["dtype"]).name for spec in inputs)
        self._function = self._build(own)
        self._functions = {own: self._function}

    def _build(self, dtypes: tuple[str, ...]) -> Any:
        """A tf.function for inputs of `dtypes`, traced by TensorFlow on its first call."""
        import tensorflow as tf

        model, inputs = self.model, self.inputs
        specs = {
            spec["name"]: tf.TensorSpec(spec["shape"], dtype)
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
                lambda t: tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t,
                result,
            )

        return tf.function(forward, input_signature=signature, autograph=False)

    def __call__(self, x: Any) -> Any:
        """Run the model on a batch: an ndarray, or a dict of them for multi-input models.

        Arrays should have the model's dtypes, or ones that convert exactly to them.
        """
        if self.multi_input:
            dtypes = tuple(np.asarray(x[spec["name"]]).dtype.name for spec in self.inputs)
        else:
            dtypes = (np.asarray(x).dtype.name,)
        function = self._functions.get(dtypes)
        if function is None:
            function = self._functions.setdefault(dtypes, self._build(dtypes))
        result = function(x)
        if isinstance(result, Mapping):
            return {name: value.numpy() for name, value in result.items()}
        if isinstance(result, (list, tuple)):
            return [value.numpy() for value in result]
        return result.numpy()

    def dtype_of(self, name: str | None = None) -> np.dtype:
        """The dtype the model expects for input `name` (the only input when None)."""
        for spec in self.inputs:
            if name is None or spec["name"] == name:
                return np.dtype(spec["dtype"])
        raise KeyError(name)
