"""A model's input and output signature: ``[{name, shape, dtype}]`` with the batch axis None."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..contract.text import STRING
from ..errors import ModelError

__all__ = ["STRING", "model_signature", "numpy_dtype", "output_structure"]


def dtype_name(dtype: Any) -> str:
    """A tensor's dtype as a signature records it: numpy's name, or "string"."""
    if str(dtype) in (STRING, "tf.string", "<dtype: 'string'>"):
        return STRING
    return str(np.dtype(dtype).name)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a signature dtype: strings are Python ``str`` objects."""
    return np.dtype(object) if name == STRING else np.dtype(name)


def _tensor_spec(tensor: Any, fallback_name: str) -> dict[str, Any]:
    name = getattr(tensor, "name", None) or fallback_name
    shape = [None if dim is None else int(dim) for dim in tensor.shape]
    return {"name": str(name), "shape": shape, "dtype": dtype_name(tensor.dtype)}


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
        output_names = _output_names(model, len(outputs))
        output_specs = [_tensor_spec(t, f"output_{i}") for i, t in enumerate(outputs)]
        if len(output_names) == len(output_specs):
            output_specs = [
                {**spec, "name": name}
                for spec, name in zip(output_specs, output_names, strict=True)
            ]
        return [_tensor_spec(t, f"input_{i}") for i, t in enumerate(inputs)], output_specs
    if sample_input is None:
        raise ModelError(
            "The model is subclassed and not built, so its input signature is unknown.\n"
            "Pass input_example= (raw training rows) so the bundle can call it once."
        )
    return _signature_from_call(model, sample_input)


def _output_names(model: Any, count: int) -> list[str]:
    """The names a functional model's outputs answer to, in the order of `model.outputs`.

    Dict outputs are named by their keys (what the model returns), in Keras' flattening
    order; list and tuple outputs by their layers (``model.output_names``).
    """
    structure = getattr(model, "_outputs_struct", None)
    if isinstance(structure, Mapping) and len(structure) == count:
        from .keras_io import import_keras

        return [str(key) for key in import_keras().tree.flatten({k: k for k in structure})]
    return [str(name) for name in getattr(model, "output_names", None) or []]


def dtype_name_or_none(dtype: Any) -> str | None:
    try:
        return dtype_name(dtype)
    except TypeError:
        return None


def output_structure(model: Any, result: Any = None) -> str:
    """How the model returns its outputs: ``"single"``, ``"list"`` or ``"dict"``.

    From a functional model's output structure, else from a `result` it returned.
    """
    structure = getattr(model, "_outputs_struct", None)
    if structure is None:
        structure = result
    if isinstance(structure, Mapping):
        return "dict"
    if isinstance(structure, (list, tuple)) and len(structure) != 1:
        return "list"
    return "single"


def _signature_from_call(model: Any, sample_input: Any) -> tuple[list[dict], list[dict]]:
    def spec(name: str, array: Any) -> dict[str, Any]:
        dtype = getattr(array, "dtype", None)
        if dtype is not None and dtype_name_or_none(dtype) == STRING:
            return {"name": name, "shape": [None, *array.shape[1:]], "dtype": STRING}
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
