"""Keras save and load: the only place that imports Keras (lazily, after pyarrow).

Reading or verifying a bundle never pays for Keras or TensorFlow: every caller imports this
module's functions inside the code path that needs them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelError

__all__ = ["import_keras", "load_model", "save_model"]

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
        raise ModelError(
            f"Keras could not save the model: {type(exc).__name__}: {exc}\n"
            "Subclassed layers and models need a get_config() returning their constructor "
            "arguments (see keras.io/guides/serialization_and_saving)."
        ) from exc


def load_model(
    path: Path, custom_objects: Mapping[str, Any], *, safe_mode: bool, compile: bool = True
) -> Any:
    """Load a ``.keras`` file with exactly the given custom objects.

    `compile` rebuilds the compile state (loss, metrics, optimizer) as it was saved; without
    it the compile config is never read, so nothing it names is looked up.
    """
    keras = import_keras()
    try:
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
