"""Reduced-precision copies of a model (float16, bfloat16) for faster inference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ModelError
from .backend import is_installed
from .keras_io import import_keras
from .quiet import import_quietly

__all__ = ["PRECISIONS", "reduced_precision"]

PRECISIONS = ("float32", "float16", "bfloat16")


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
    if is_installed("tensorflow"):
        # Keras' serialization imports TensorFlow where installed, on any backend: import it
        # first, without its start-up banner on stderr.
        import_quietly("tensorflow")

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = precision
        return layer.__class__.from_config(config)

    try:
        # Cloning rebuilds the compile config too, which names the custom objects.
        with keras.saving.custom_object_scope(dict(custom_objects or {})):
            clone = keras.models.clone_model(model, clone_function=clone_layer)
    except Exception as exc:
        raise ModelError(
            f"Cannot run {type(model).__name__} in {precision}: {exc}\n"
            "Reduced precision needs a Sequential or functional model."
        ) from exc
    clone.set_weights(model.get_weights())
    return clone
