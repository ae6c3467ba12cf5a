"""Models a team already has on disk: ``.keras`` and legacy ``.h5`` files, and what cannot be
bundled (a TensorFlow SavedModel, a ``TFSMLayer``).

A model loaded from a legacy HDF5 file is an ordinary Keras 3 model: a bundle stores it in
the native format like any other. A TensorFlow SavedModel is a graph, not a Keras model:
Keras 3 can only wrap it in a ``TFSMLayer``, which reloads the graph from its path every
time the model is built, so a bundle could not carry it; it is refused, with what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelError, UsageError
from .keras_io import import_keras

KERAS_SUFFIXES = (".keras",)
HDF5_SUFFIXES = (".h5", ".hdf5")

__all__ = ["HDF5_SUFFIXES", "KERAS_SUFFIXES", "check_bundlable", "load_model_file"]

_RESAVE = (
    "Re-save it from the code that builds or loads it as a Keras model: model.save("
    "'model.keras') with Keras 3, or model.save('model.h5') with tf.keras 2.x (both load "
    "here), then bundle that file."
)


def _layers(model: Any) -> Iterator[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    return iter(flatten(include_self=False, recursive=True)) if flatten is not None else iter(())


def check_bundlable(model: Any) -> None:
    """Refuse a model a bundle cannot carry: one that reads a TensorFlow graph from a path.

    Raises:
        ModelError: the model holds a ``TFSMLayer``; the message says what to do.
    """
    found = [layer for layer in _layers(model) if type(layer).__name__ == "TFSMLayer"]
    if not found:
        return
    layer = found[0]
    where = getattr(layer, "filepath", None) or "its path"
    raise ModelError(
        f"Layer {layer.name!r} of model {getattr(model, 'name', '')!r} is a TFSMLayer: it "
        f"reloads the TensorFlow SavedModel at {where} every time the model is built, from "
        "outside any bundle, so a bundle cannot carry it (and loading it would run a graph "
        f"chosen by a path).\n{_RESAVE} To serve the SavedModel as it is, use TensorFlow "
        "Serving on it directly.",
        layer=str(layer.name),
    )


def load_model_file(path: str | Path, custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Load a ``.keras`` or legacy ``.h5`` model file a team already has (trusted: theirs).

    The compile state is restored when Keras can (a custom loss needs `custom_objects`);
    otherwise the model is loaded without it, which prediction does not need.

    Raises:
        UsageError: `path` is a TensorFlow SavedModel directory, or not a model file.
        ModelError: Keras could not load the file (a custom object is missing, ...).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            raise UsageError(
                f"{path} is a TensorFlow SavedModel, not a Keras model file. Keras 3 reads "
                "it only as a TFSMLayer, which reloads it from that path at every load, so a "
                f"bundle cannot carry it.\n{_RESAVE}"
            )
        raise UsageError(f"{path} is a directory, not a .keras or .h5 model file.")
    if not path.is_file():
        raise UsageError(f"No model file at {path}.")
    if path.suffix.lower() not in KERAS_SUFFIXES + HDF5_SUFFIXES:
        known = ", ".join(KERAS_SUFFIXES + HDF5_SUFFIXES)
        raise UsageError(f"{path.name}: expected a Keras model file ({known}).")
    keras = import_keras()
    objects = dict(custom_objects or {})
    # Keras' HDF5 reader logs that compiled metrics are built on first use: not news here.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        try:
            model = keras.saving.load_model(str(path), custom_objects=objects, safe_mode=False)
        except (TypeError, ValueError) as exc:
            if "compile" not in str(exc).lower() and "loss" not in str(exc).lower():
                raise
            model = keras.saving.load_model(
                str(path), custom_objects=objects, safe_mode=False, compile=False
            )
    except Exception as exc:
        raise ModelError(
            f"Keras could not load {path.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            "\nA custom layer or function needs its class: pass it as a custom object "
            "(bundle pack --custom-object module:Name)."
        ) from exc
    finally:
        absl.setLevel(level)
    check_bundlable(model)
    return model
