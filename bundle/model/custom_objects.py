"""Find a model's custom objects; store each by reference or by value.

A custom object is anything Keras must be told about to rebuild the model: a subclassed
layer or model, a loss, metric, activation, initializer, regularizer or constraint that is
not part of Keras. They are found by walking the model's layers and its compile arguments,
then merged with the user's ``custom_objects=``.

Importable objects from installed distributions are stored by reference (module and
qualified name) and imported at load. Objects defined in ``__main__``, in a function body,
or in a local module that is not an installed distribution (a ``utils.py`` next to the
training script) are stored by value with cloudpickle; loading those executes code, so
they need ``trusted=True``.
"""

from __future__ import annotations

import importlib
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..format.pickling import dumps_by_value, is_installed_module, pickle_globals

# Objects from these top-level packages are known to Keras without help.
BUILTIN_PACKAGES = frozenset(
    {"keras", "tensorflow", "tf_keras", "numpy", "builtins", "jax", "torch"}
)

# Keras base classes (by name) that say what kind of custom object a class is.
KIND_BY_BASE = {
    "Model": "model",
    "Layer": "layer",
    "Loss": "loss",
    "Metric": "metric",
    "Initializer": "initializer",
    "Regularizer": "regularizer",
    "Constraint": "constraint",
    "Optimizer": "optimizer",
    "LearningRateSchedule": "schedule",
}
# Function-valued layer attributes and what they are.
KIND_BY_ATTRIBUTE = {"activation": "activation", "recurrent_activation": "activation"}
# Compile arguments and the kind of object they hold.
KIND_BY_COMPILE_ARG = {
    "loss": "loss",
    "metrics": "metric",
    "weighted_metrics": "metric",
    "optimizer": "optimizer",
}

__all__ = ["CustomObject", "discover", "load_custom_objects", "save_custom_objects"]


@dataclass(frozen=True)
class CustomObject:
    """One custom object: the name Keras looks it up by, what it is, and how it is stored."""

    name: str
    kind: str
    obj: Any
    storage: str  # "reference" | "value"

    @property
    def module(self) -> str:
        return getattr(self.obj, "__module__", None) or type(self.obj).__module__

    @property
    def qualname(self) -> str:
        return getattr(self.obj, "__qualname__", None) or type(self.obj).__qualname__


def discover(model: Any, user: Mapping[str, Any] | None = None) -> list[CustomObject]:
    """Every custom object the model needs, merged with the user's `custom_objects`.

    The user's names win on conflict: they are the names the model was built with.
    """
    found: dict[str, tuple[str, Any]] = {}
    for kind, obj in _walk_model(model):
        name = _registered_name(obj)
        if name in found and found[name][1] is not obj:
            other = found[name][1]
            raise ModelError(
                f"Two different custom objects are both named {name!r}: "
                f"{_qualified(other)} and {_qualified(obj)}. Keras finds custom objects by "
                "name, so only one of them could be restored.\nRename one, or register it "
                "under its own name with @keras.saving.register_keras_serializable(package=...)."
            )
        found.setdefault(name, (kind, obj))
    for name, obj in (user or {}).items():
        kind = found.get(name, (None, None))[0] or _kind_of(obj)
        found[name] = (kind, obj)
    return [
        CustomObject(name=name, kind=kind, obj=obj, storage=_storage(obj))
        for name, (kind, obj) in sorted(found.items())
    ]


def _walk_model(model: Any) -> Iterator[tuple[str, Any]]:
    if not _is_builtin(type(model)):
        yield "model", type(model)
    layers = model._flatten_layers(include_self=False, recursive=True)
    for layer in layers:
        if not _is_builtin(type(layer)):
            yield "layer", type(layer)
        for attribute, value in _attributes(layer):
            yield from _custom_values(value, KIND_BY_ATTRIBUTE.get(attribute))
    compile_config = getattr(model, "_compile_config", None)
    arguments = getattr(compile_config, "config", None) or {}
    for argument, value in arguments.items():
        yield from _custom_values(value, KIND_BY_COMPILE_ARG.get(argument))


def _custom_values(value: Any, kind: str | None, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Custom functions, classes and instances inside a (nested) attribute value."""
    if depth > 3:
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _custom_values(item, kind, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _custom_values(item, kind, depth + 1)
    elif isinstance(value, types.FunctionType):
        if not _is_builtin(value):
            yield kind or "function", value
    elif _keras_kind(type(value)):
        kind_of_class = _keras_kind(type(value))
        # layers are walked on their own
        if not _is_builtin(type(value)) and kind_of_class not in ("layer", "model"):
            yield kind_of_class, type(value)
        if kind_of_class == "optimizer":
            # Saved with its learning-rate schedule, which may be custom.
            for _attribute, item in _attributes(value):
                yield from _custom_values(item, None, depth + 1)


def _attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    """An object's instance attributes, minus those shadowing a method of its class.

    Keras wraps `build` per instance (a closure over the layer): no custom object.
    """
    for attribute, value in vars(obj).items():
        if not isinstance(getattr(type(obj), attribute, None), types.FunctionType):
            yield attribute, value


def _qualified(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _keras_kind(cls: type) -> str | None:
    for base in cls.__mro__:
        if base.__module__.split(".")[0] == "keras" and base.__name__ in KIND_BY_BASE:
            return KIND_BY_BASE[base.__name__]
    return None


def _kind_of(obj: Any) -> str:
    if isinstance(obj, type):
        return _keras_kind(obj) or "object"
    if isinstance(obj, types.FunctionType):
        return "function"
    return _keras_kind(type(obj)) or "object"


def _is_builtin(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in BUILTIN_PACKAGES


def _registered_name(obj: Any) -> str:
    import keras

    return keras.saving.get_registered_name(obj)


def _storage(obj: Any) -> str:
    return "reference" if _importable(obj) else "value"


def _importable(obj: Any) -> bool:
    """True if `obj` can be found again by module and qualified name in another process."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<locals>" in qualname:
        return False
    if not is_installed_module(module):
        return False
    try:
        return _resolve(module, qualname) is obj
    except (ImportError, AttributeError):
        return False


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _file_stem(name: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "object"
    candidate, counter = stem, 1
    while candidate in taken:
        counter += 1
        candidate = f"{stem}_{counter}"
    taken.add(candidate)
    return candidate


def save_custom_objects(objects: Iterable[CustomObject], directory: Path) -> list[dict[str, Any]]:
    """Write the by-value objects into `directory` and return their manifest records."""
    records, taken = [], set()
    for item in objects:
        record = {
            "name": item.name,
            "kind": item.kind,
            "storage": item.storage,
            "module": item.module,
            "qualname": item.qualname,
            "file": None,
            "executes_code": item.storage == "value",
            "serializer": "reference" if item.storage == "reference" else "cloudpickle",
            "imports": [f"{item.module}.{item.qualname}"],
        }
        if item.storage == "value":
            data = dumps_by_value(item.obj)
            relative = f"{directory.name}/{_file_stem(item.name, taken)}.pkl"
            directory.mkdir(parents=True, exist_ok=True)
            (directory.parent / relative).write_bytes(data)
            record["file"] = relative
            record["imports"] = sorted({*record["imports"], *pickle_globals(data)})
        records.append(record)
    return records


def load_custom_objects(directory: Path, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Rebuild ``{name: object}`` from manifest records (trust was checked by the caller)."""
    loaded = {}
    for record in records:
        if record["storage"] == "value":
            import cloudpickle

            with open(Path(directory) / record["file"], "rb") as handle:
                loaded[record["name"]] = cloudpickle.load(handle)
            continue
        try:
            loaded[record["name"]] = _resolve(record["module"], record["qualname"])
        except (ImportError, AttributeError) as exc:
            raise ModelError(
                f"Custom {record['kind']} {record['name']!r} is stored by reference to "
                f"{record['module']}.{record['qualname']}, which cannot be imported here: {exc}.\n"
                f"Install the package that provides {record['module']!r} in this environment."
            ) from exc
    return loaded
