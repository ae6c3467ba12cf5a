"""The model's forward pass, compiled once on the running Keras backend.

`inference_function` picks the implementation for the backend Keras runs on, each in its
own module: a traced ``tf.function`` on TensorFlow (`tf_backend`), ``jax.jit`` of the
stateless call on JAX (`jax_backend`), inference mode on PyTorch (`torch_backend`). They
share this module's contract: called with a batch (an ndarray, or a dict of them for
multi-input models) of the model's dtypes or of ones that convert exactly to them (uint8
images for a float32 model, cast inside the compiled function), they return NumPy arrays
in the model's output structure, float32 for reduced-precision models.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .keras_io import import_keras
from .signature import numpy_dtype

__all__ = ["IMPLEMENTATIONS", "InferenceFunction", "inference_function", "place_rows"]

IMPLEMENTATIONS = {
    "tensorflow": ("tf_backend", "TensorFlowInference"),
    "jax": ("jax_backend", "JaxInference"),
    "torch": ("torch_backend", "TorchInference"),
}
"""Keras backend -> (module in this package, class) of its inference function."""

REDUCED_PRECISION = frozenset({"float16", "bfloat16"})


class InferenceFunction:
    """A model's compiled forward pass: one compiled function per tuple of input dtypes.

    Subclasses implement `_build` (compile for given input dtypes) and `_run` (call a
    compiled function on a batch, return NumPy outputs). The first function, for the
    model's own dtypes, is built at construction.
    """

    backend = ""

    def __init__(self, model: Any, inputs: list[dict[str, Any]]):
        self.model = model
        self.inputs = inputs
        self.multi_input = len(inputs) > 1
        own = tuple(numpy_dtype(spec["dtype"]).name for spec in inputs)
        self._function = self._build(own)
        self._functions: dict[tuple[str, ...], Any] = {own: self._function}

    def _build(self, dtypes: tuple[str, ...]) -> Any:
        raise NotImplementedError

    def _run(self, function: Any, x: Any) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any) -> Any:
        """Run the model on a batch: an ndarray, or a dict of them for multi-input models.

        Arrays should have the model's dtypes, or ones that convert exactly to them.
        """
        if self.multi_input:
            dtypes = tuple(_dtype_name(x[spec["name"]]) for spec in self.inputs)
        else:
            dtypes = (_dtype_name(x),)
        function = self._functions.get(dtypes)
        if function is None:
            function = self._functions.setdefault(dtypes, self._build(dtypes))
        return self._run(function, x)

    def dtype_of(self, name: str | None = None) -> np.dtype:
        """The dtype the model expects for input `name` (the only input when None)."""
        for spec in self.inputs:
            if name is None or spec["name"] == name:
                return numpy_dtype(spec["dtype"])
        raise KeyError(name)

    def ordered(self, x: Any) -> Any:
        """A multi-input batch as a dict in the model's input order; other batches as given."""
        if self.multi_input:
            return {spec["name"]: x[spec["name"]] for spec in self.inputs}
        return x


def _dtype_name(x: Any) -> str:
    """An array's or a backend tensor's dtype name (a tensor is not copied to NumPy)."""
    name = getattr(getattr(x, "dtype", None), "name", None)
    return name if isinstance(name, str) else np.asarray(x).dtype.name


def to_numpy(result: Any, convert: Any) -> Any:
    """`result` (a tensor, or a dict or list of them) with each tensor through `convert`."""
    if isinstance(result, Mapping):
        return {name: convert(value) for name, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [convert(value) for value in result]
    return convert(result)


def place_rows(outputs: Any, result: Any, start: int, total: int) -> Any:
    """Write one slice's `result` into rows ``start:`` of a batch of `total` rows' outputs.

    `outputs` is None for the first slice: the arrays (or the dict or list of them) are
    allocated then, shaped like `result`'s with `total` rows; the filled outputs are returned.
    """
    if isinstance(result, Mapping):
        outputs = outputs or {}
        for key, value in result.items():
            outputs[key] = place_rows(outputs.get(key), value, start, total)
        return outputs
    if isinstance(result, list):
        outputs = outputs or [None] * len(result)
        return [place_rows(o, r, start, total) for o, r in zip(outputs, result, strict=True)]
    if outputs is None:
        outputs = np.empty((total, *result.shape[1:]), dtype=result.dtype)
    outputs[start : start + len(result)] = result
    return outputs


def inference_function(model: Any, inputs: list[dict[str, Any]]) -> InferenceFunction:
    """The compiled forward pass of `model` on the backend Keras runs on.

    Args:
        model: a built Keras model.
        inputs: its input signature, ``[{name, shape, dtype}]`` (`model_signature`).
    """
    keras = import_keras()
    backend = str(keras.backend.backend())
    if backend not in IMPLEMENTATIONS:
        from ..errors import ModelError

        raise ModelError(
            f"Keras runs on the {backend!r} backend, which keras-bundle cannot run models "
            f"on; supported: {', '.join(IMPLEMENTATIONS)}.\n"
            "Set KERAS_BACKEND to one of them before Keras is imported."
        )
    module_name, class_name = IMPLEMENTATIONS[backend]
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)(model, inputs)
