"""Which Keras backend runs the model: chosen before Keras is imported, recorded at save.

Keras 3 runs on TensorFlow, JAX or PyTorch and picks one when it is first imported: the
``KERAS_BACKEND`` variable, else ``~/.keras/keras.json``, else TensorFlow. Keras writes
that file on its first import with whatever backend it ran on, so the file's presence says
nothing about the user's intent. Only when the backend Keras would pick is not installed
(``pip install "keras-bundle[jax]"`` with no TensorFlow and no ``KERAS_BACKEND``) does
keras-bundle choose for it: the backend the bundle was saved under if installed, else the
first installed of JAX, PyTorch, TensorFlow. An explicit ``KERAS_BACKEND`` is never
overridden.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError

__all__ = [
    "BACKENDS",
    "BACKEND_EXTRAS",
    "backend_name",
    "backend_record",
    "backend_version",
    "choose_backend",
    "is_installed",
    "missing_backend_error",
]

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends keras-bundle runs on, in the order tried when none is configured."""
BACKEND_EXTRAS = {"tensorflow": "cpu", "jax": "jax", "torch": "torch"}
"""The keras-bundle extra that installs each backend."""
# The distributions that provide each backend's import package (the first installed wins).
DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel"),
    "jax": ("jax",),
    "torch": ("torch",),
}
LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
FALLBACK_ORDER = ("jax", "torch", "tensorflow")


def is_installed(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook refusing it counts as absent
        return False


def _configured_backend() -> str:
    """The backend Keras would pick now: ``KERAS_BACKEND``, else keras.json, else TensorFlow."""
    explicit = os.environ.get("KERAS_BACKEND")
    if explicit:
        return explicit
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~") if os.access(os.path.expanduser("~"), os.W_OK) else "/tmp",
        ".keras",
    )
    try:
        config = json.loads((Path(home) / "keras.json").read_text())
    except (OSError, ValueError):
        return "tensorflow"
    backend = config.get("backend") if isinstance(config, dict) else None
    return backend if isinstance(backend, str) and backend else "tensorflow"


def choose_backend(prefer: str | None = None) -> str:
    """Make sure Keras will import on an installed backend; return the one it will use.

    Does nothing once Keras is imported (its backend is fixed then) or when
    ``KERAS_BACKEND`` is set. Otherwise, if the backend Keras would pick is not installed,
    sets ``KERAS_BACKEND`` to `prefer` (the bundle's) when installed, else to the first
    installed of JAX, PyTorch and TensorFlow.
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        return str(keras.backend.backend())
    configured = _configured_backend()
    if os.environ.get("KERAS_BACKEND") or is_installed(configured):
        return configured
    for candidate in (prefer, *FALLBACK_ORDER):
        if candidate in BACKENDS and is_installed(candidate):
            os.environ["KERAS_BACKEND"] = candidate
            return candidate
    return configured  # none installed: importing Keras raises, and import_keras says why


def backend_name() -> str:
    """The backend the imported Keras runs on: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    import keras

    return str(keras.backend.backend())


def backend_version(name: str) -> str | None:
    """The installed version of backend `name` (its distribution's), or None."""
    for distribution in DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def backend_record() -> dict[str, Any]:
    """What the manifest records about the backend a model is saved under."""
    name = backend_name()
    return {"name": name, "version": backend_version(name)}


def label(name: str) -> str:
    """How messages name a backend: ``TensorFlow``, ``JAX``, ``PyTorch``."""
    return LABELS.get(name, name)


def missing_backend_error(name: str, exc: BaseException | None = None) -> MissingDependencyError:
    """The error for Keras configured on backend `name`, which is not installed."""
    extra = BACKEND_EXTRAS.get(name)
    distribution = "tensorflow-cpu" if name == "tensorflow" else name
    installed = [b for b in BACKENDS if b != name and is_installed(b)]
    source = (
        f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"
        if os.environ.get("KERAS_BACKEND")
        else "Keras' default"
    )
    remedy = f'Install it (pip install "keras-bundle[{extra}]")' if extra else "Install it"
    if installed:
        remedy += f", or set KERAS_BACKEND to an installed backend ({', '.join(installed)})"
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return MissingDependencyError(
        f"Keras is set to run on {label(name)} ({source}), but {name} cannot be imported"
        f"{detail}.\n{remedy}.",
        package=distribution,
        extra=extra,
    )
