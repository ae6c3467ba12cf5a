"""Keras save and load: the only place that imports Keras (lazily, after pyarrow).

Reading or verifying a bundle never pays for Keras or TensorFlow: every caller imports this
module's functions inside the code path that needs them.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .backend import choose_backend, is_installed, missing_backend_error
from .quiet import import_quietly

__all__ = ["import_keras", "load_model", "save_model"]


def import_keras(prefer: str | None = None) -> Any:
    """Import Keras on an installed backend (`prefer`: the bundle's), after pyarrow.

    The backend is chosen by `bundle.model.backend.choose_backend` (an explicit
    ``KERAS_BACKEND`` always wins). pyarrow and TensorFlow bundle their own copies of native
    libraries; importing pyarrow's Parquet reader after TensorFlow has crashed processes in
    several version combinations (apache/arrow#1450, #2637), and bundles read Parquet
    examples and files. TensorFlow's start-up banner (oneDNN, CPU features) stays off
    stderr unless ``KERAS_BUNDLE_VERBOSE=1`` (`quiet`).

    Raises:
        MissingDependencyError: Keras is set to a backend that is not installed.
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras
    backend = choose_backend(prefer)
    importlib.import_module("pyarrow.parquet")
    try:
        return import_quietly("keras")
    except ImportError as exc:
        if not is_installed(backend):
            raise missing_backend_error(backend, exc) from exc
        raise


def save_model(model: Any, path: Path, *, include_optimizer: bool = True) -> dict[str, Any]:
    """Save `model` in the Keras v3 native format (``.keras``); return what it holds.

    With `include_optimizer` False the optimizer's state (Adam's moments: twice the weights)
    is left out: the file holds the optimizer's configuration only, so a loaded model is
    compiled with a fresh optimizer. Keras 3 ignores its own ``include_optimizer`` for
    ``.keras`` files, so the model is saved with an unbuilt copy of its optimizer instead.

    Returns:
        ``{"weights_bytes", "optimizer_bytes", "includes_optimizer"}``: the size of the
        weights and of the optimizer's state in memory (whether stored or not), and whether
        that state is in the file.
    """
    optimizer = getattr(model, "optimizer", None)
    # An optimizer never built (compiled, not trained) holds no state: 0 bytes.
    built = optimizer is not None and getattr(optimizer, "built", True)
    record = {
        "weights_bytes": _nbytes(getattr(model, "weights", [])),
        "optimizer_bytes": _nbytes(getattr(optimizer, "variables", [])) if built else 0,
        "includes_optimizer": bool(include_optimizer and optimizer is not None),
    }
    try:
        if include_optimizer or optimizer is None:
            model.save(str(path))
        else:
            with _unbuilt_optimizer(model, optimizer):
                model.save(str(path))
    except Exception as exc:
        raise ModelError(
            f"Keras could not save the model: {type(exc).__name__}: {exc}\n"
            "Subclassed layers and models need a get_config() returning their constructor "
            "arguments (see keras.io/guides/serialization_and_saving)."
        ) from exc
    return record


def _nbytes(variables: Any) -> int:
    total = 0
    for variable in variables or []:
        shape = tuple(int(d) for d in getattr(variable, "shape", ()))
        dtype = str(getattr(variable, "dtype", "float32"))
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            itemsize = 4
        total += int(np.prod(shape, dtype=np.int64)) * itemsize
    return total


@contextlib.contextmanager
def _unbuilt_optimizer(model: Any, optimizer: Any) -> Any:
    """While saving, `model` holds a fresh copy of `optimizer` (same config, no state)."""
    fresh = type(optimizer).from_config(optimizer.get_config())
    model.optimizer = fresh
    try:
        yield
    finally:
        model.optimizer = optimizer


def load_model(
    path: Path,
    custom_objects: Mapping[str, Any],
    *,
    safe_mode: bool,
    compile: bool = True,
    optimizer_state: bool = True,
) -> Any:
    """Load a ``.keras`` file with exactly the given custom objects.

    `compile` rebuilds the compile state (loss, metrics, optimizer) as it was saved; without
    it the compile config is never read, so nothing it names is looked up. With
    `optimizer_state` False (saved with ``include_optimizer=False``) the optimizer starts
    fresh, and Keras' warning that it found no state to load is expected, so not shown.
    """
    keras = import_keras()
    try:
        with warnings.catch_warnings():
            if not optimizer_state:
                warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            return keras.saving.load_model(
                str(path), custom_objects=dict(custom_objects), compile=compile, safe_mode=safe_mode
            )
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            from ..errors import UnsafeLoadError

            raise UnsafeLoadError(
                f"Refusing to load {Path(path).name}: the model contains a Lambda layer whose "
                "Python code is stored in the file, and deserializing it runs that code.\n"
                "If you made this bundle or trust its source: Bundle.load(path, trusted=True).",
                parts=[(Path(path).name, "keras", ["keras.layers.Lambda"])],
            ) from exc
        raise ModelError(f"Keras could not load {Path(path).name}: {exc}") from exc
    except TypeError as exc:
        raise ModelError(
            f"Keras could not load {Path(path).name}: {exc}\n"
            "A custom object is probably missing: pass it with custom_objects= when saving."
        ) from exc
