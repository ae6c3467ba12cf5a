"""What a ``.keras`` file's ``config.json`` asks Keras to build, read as JSON: no Keras, no code.

A Keras v3 file is a zip whose ``config.json`` describes the model (``compile_config`` holds
the loss, metrics and optimizer). The trust policy reads it, never the manifest's claims
about it: the parts that carry or call Python code (``Lambda`` layers, whose function may
also be a custom object called with arguments from the file; ``TFSMLayer``, which loads a
TensorFlow graph from a path; serialized lambdas), and every name the architecture can look
a custom object up by, which tells the custom objects prediction needs from those only
compiling needs.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

CONFIG_MEMBER = "config.json"
# A model's config is kilobytes to a few megabytes (vocabularies); anything larger is not one.
MAX_CONFIG_BYTES = 256 << 20
MAX_DEPTH = 512
# class_name -> why building it runs code that the file chooses.
CODE_CLASSES = {
    "Lambda": ("Lambda layer", "its function runs with arguments taken from the file"),
    "TFSMLayer": ("TFSMLayer", "it loads and runs a TensorFlow graph from a path in the file"),
    "__lambda__": ("serialized lambda", "its Python bytecode runs"),
}
# Keras resolves ``{"class_name": "function", "module": "keras.<namespace>", "config": name}``
# to any public Keras function, minus a short deny list (keras.saving.serialization_lib's
# NON_MODELING_APIS): `keras.config.set_floatx`, `keras.datasets.mnist.load_data` (a network
# download) and the like would be called with arguments from the file. Keras writes its own
# functions with module "builtins"; a keras.* module is taken only from these namespaces.
MODELING_NAMESPACES = frozenset(
    {
        "activations", "constraints", "initializers", "layers", "losses", "metrics", "ops",
        "optimizers", "random", "regularizers",
    }
)  # fmt: skip

# Keys whose strings name layers, models and tensors of this very config: Keras reads them as
# names, never as custom objects. A loss called `price` on an output layer named "price" is
# still compile only.
NAME_KEYS = frozenset({"name", "keras_history", "input_layers", "output_layers"})

__all__ = ["CODE_CLASSES", "MODELING_NAMESPACES", "ModelConfig", "read_model_config"]


@dataclass(frozen=True)
class ModelConfig:
    """The facts the trust policy needs from a model file's ``config.json``.

    Attributes:
        code: where the architecture holds or calls Python code, one description each.
        compile_code: the same for the compile config (loss, metrics, optimizer).
        names: every string in the architecture except layer, model and tensor names (values
            of `NAME_KEYS`, which Keras never looks up): a custom object is needed to predict
            when Keras can look it up by one of them.
        compile_names: every string in the compile config.
    """

    code: tuple[str, ...]
    compile_code: tuple[str, ...]
    names: frozenset[str]
    compile_names: frozenset[str]

    def needed_to_predict(self, name: str) -> bool:
        """True when rebuilding the architecture can look up custom object `name`."""
        return name in self.names


def read_model_config(path: Path) -> ModelConfig:
    """Read and audit the ``config.json`` of the ``.keras`` file at `path`.

    Raises:
        ModelError: the file is not a Keras v3 zip with a readable ``config.json``.
    """
    name = Path(path).name
    try:
        handle = _open_regular(Path(path))
    except OSError as exc:
        raise ModelError(f"{name} cannot be read: {exc}.") from exc
    try:
        with handle, zipfile.ZipFile(handle) as archive:
            info = archive.getinfo(CONFIG_MEMBER)
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelError(
                    f"{name}: its {CONFIG_MEMBER} declares {info.file_size:,} bytes, more than "
                    f"the {MAX_CONFIG_BYTES:,} a model description can need."
                )
            text = archive.read(info)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, NotImplementedError) as exc:
        raise ModelError(
            f"{name} is not a Keras v3 model file (a zip holding {CONFIG_MEMBER}): {exc}.\n"
            "The bundle was written by a broken tool or replaced; restore it from the release."
        ) from exc
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelError(
            f"{name}: its {CONFIG_MEMBER} is not valid JSON ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(config, dict):
        raise ModelError(f"{name}: its {CONFIG_MEMBER} is not a JSON object.")
    architecture = {key: value for key, value in config.items() if key != "compile_config"}
    compile_config = config.get("compile_config")
    code, names = _audit(architecture, name)
    compile_code, compile_names = _audit(compile_config, name)
    return ModelConfig(tuple(code), tuple(compile_code), frozenset(names), frozenset(compile_names))


def _open_regular(path: Path) -> Any:
    """`path` opened for reading if it is a regular file (links followed: a snapshot's files
    are links to verified descriptors); a FIFO or a device is refused without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ModelError(f"{path.name} is not a regular file: refused before reading it.")
    return open(fd, "rb")


def _audit(config: Any, name: str) -> tuple[list[str], set[str]]:
    """(code found, every string) in a JSON value, walked without recursion.

    Code inside code (the serialized lambda of a Lambda layer) is reported once, as its
    outermost part.
    """
    code: list[str] = []
    strings: set[str] = set()
    stack: list[tuple[Any, int, bool, bool]] = [(config, 0, False, False)]
    while stack:
        node, depth, inside_code, a_name = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelError(
                f"{name}: its {CONFIG_MEMBER} nests deeper than {MAX_DEPTH} levels; "
                "no Keras model does."
            )
        if isinstance(node, str):
            if not a_name:
                strings.add(node)
        elif isinstance(node, list):
            stack.extend((child, depth + 1, inside_code, a_name) for child in node)
        elif isinstance(node, dict):
            is_code = node.get("class_name") in CODE_CLASSES
            if is_code and not inside_code:
                inner = node.get("config")
                label = inner.get("name") if isinstance(inner, dict) else None
                kind, why = CODE_CLASSES[node["class_name"]]
                named = f"{kind} {label!r}" if isinstance(label, str) else f"a {kind}"
                code.append(f"{named} ({why})")
            function = None if inside_code else _keras_api_function(node)
            if function is not None:
                code.append(
                    f"Keras function {function!r} (not a modeling function: Keras would call "
                    "it with arguments taken from the file)"
                )
            stack.extend(
                (child, depth + 1, inside_code or is_code, key in NAME_KEYS)
                for key, child in node.items()
            )
    return code, strings


def _keras_api_function(node: dict[str, Any]) -> str | None:
    """The public Keras function outside `MODELING_NAMESPACES` that a function node names."""
    module, name = node.get("module"), node.get("config")
    if node.get("class_name") != "function" or not isinstance(module, str):
        return None
    if not isinstance(name, str) or not (module == "keras" or module.startswith("keras.")):
        return None
    api = f"{module}.{name}"
    parts = api.split(".")
    if len(parts) > 2 and parts[1] in MODELING_NAMESPACES:
        return None
    return api
