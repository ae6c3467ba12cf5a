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

Without trust, a reference resolves only as the trust policy allows
(`bundle.format.references`): the module's files are checked before it is imported and
again after, and the name must be a Keras class or a function registered with Keras,
defined in that very module (``keras.src.utils.file_utils.os.system`` is ``os.system``
reached through another module's attribute, and is refused). Each record says whether
prediction needs the object (`needed_for`), from the model's own config.
"""

from __future__ import annotations

import importlib
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, UnsafeLoadError
from ..format.keras_config import ModelConfig
from ..format.pickling import dumps_by_value, is_installed_module, pickle_globals
from ..format.references import locate_module, reference_problem
from ..format.trust import COMPILE, PREDICT, unsafe_reason

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


def save_custom_objects(
    objects: Iterable[CustomObject], directory: Path, *, model_config: ModelConfig | None = None
) -> list[dict[str, Any]]:
    """Write the by-value objects into `directory` and return their manifest records.

    `model_config`, the saved model's audited config, decides each record's ``needed_for``:
    ``"predict"`` when the architecture names the object, else ``"compile"``.
    """
    records, taken = [], set()
    for item in objects:
        record = {
            "name": item.name,
            "kind": item.kind,
            "storage": item.storage,
            "module": item.module,
            "qualname": item.qualname,
            "file": None,
            # A reference to anything but a Keras class or registered function could be
            # called by Keras with arguments from the model file: it needs trust to load.
            "executes_code": item.storage == "value" or keras_object_problem(item.obj) is not None,
            "serializer": "reference" if item.storage == "reference" else "cloudpickle",
            "imports": [f"{item.module}.{item.qualname}"],
        }
        if model_config is not None:
            record["needed_for"] = PREDICT if model_config.needed_to_predict(item.name) else COMPILE
        if item.storage == "value":
            data = dumps_by_value(item.obj)
            relative = f"{directory.name}/{_file_stem(item.name, taken)}.pkl"
            directory.mkdir(parents=True, exist_ok=True)
            (directory.parent / relative).write_bytes(data)
            record["file"] = relative
            record["imports"] = sorted({*record["imports"], *pickle_globals(data)})
        else:
            record["executes_code"] = unsafe_reason(record) is not None
        records.append(record)
    return records


def load_custom_objects(
    directory: Path, records: Iterable[Mapping[str, Any]], *, trusted: bool
) -> dict[str, Any]:
    """Rebuild ``{name: object}`` from manifest records (the caller took the trust decision).

    Raises:
        UnsafeLoadError: without trust, a pickle, or a reference the policy refuses.
        BackendError: an object's code imports a Keras backend's library not installed here.
        ModelError: a reference cannot be imported here, or its import failed.
    """
    return {
        record["name"]: load_custom_object(directory, record, trusted=trusted) for record in records
    }


def load_custom_object(directory: Path, record: Mapping[str, Any], *, trusted: bool) -> Any:
    """Rebuild one custom object: unpickle it (trusted only) or resolve its reference."""
    if record["storage"] == "value":
        if not trusted:  # the policy refused it already: never reached, never unpickled
            raise UnsafeLoadError(
                f"Refusing to unpickle custom object {record['name']!r} without trust.",
                parts=[(str(record.get("file")), "cloudpickle", list(record.get("imports") or []))],
            )
        import cloudpickle

        with open(Path(directory) / record["file"], "rb") as handle:
            try:
                return cloudpickle.load(handle)
            except ImportError as exc:
                raise _not_importable(record, exc) from exc
    if trusted:
        return _resolve_trusted(record)
    return _resolve_untrusted(record, inside=Path(directory))


def _resolve_trusted(record: Mapping[str, Any]) -> Any:
    module, qualname = record["module"], record["qualname"]
    try:
        return _resolve(module, qualname)
    except (ImportError, AttributeError) as exc:
        raise _not_importable(record, exc) from exc
    except BaseException as exc:  # SystemExit from import-time code must not end a server
        raise _import_failed(record, exc) from exc


def _resolve_untrusted(record: Mapping[str, Any], *, inside: Path) -> Any:
    """Import a reference as the policy allows, and check it is what it says it is."""
    module, qualname = str(record["module"]), str(record["qualname"])
    problem = reference_problem(module, qualname, inside=inside)
    if problem is not None:
        raise _refused(record, problem)
    origin = locate_module(module)
    if origin is None:  # nothing found: not imported, so nothing else found can run
        raise _not_importable(record, ModuleNotFoundError(f"No module named {module!r}"))
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise _not_importable(record, exc) from exc
    except BaseException as exc:  # SystemExit, KeyboardInterrupt from import-time code
        raise _import_failed(record, exc) from exc
    executed = os.path.realpath(getattr(imported, "__file__", None) or "")
    if executed != origin.file:
        raise _refused(record, f"{module} was imported from {executed}, not from {origin.file}")
    obj: Any = imported
    parts = qualname.split(".")
    for depth, part in enumerate(parts):
        namespace = vars(obj)
        if part not in namespace:
            raise _not_importable(
                record, AttributeError(f"{'.'.join([module, *parts[:depth]])} has no {part!r}")
            )
        obj = namespace[part]
        if depth < len(parts) - 1 and not isinstance(obj, type):
            raise _refused(
                record,
                f"{qualname} goes through {part}, a {type(obj).__name__} and not a class: a "
                "reference may only name a class or function defined in its own module",
            )
    defined_in = (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))
    if defined_in != (module, qualname):
        where = ".".join(str(name) for name in defined_in if name) or type(obj).__name__
        raise _refused(
            record,
            f"{module}.{qualname} is {where}, defined elsewhere: a reference may only name a "
            "class or function defined in its own module",
        )
    problem = keras_object_problem(obj)
    if problem is not None:
        raise _refused(record, f"{module}.{qualname} {problem}")
    return obj


def keras_object_problem(obj: Any) -> str | None:
    """Why `obj` is no Keras object a reference may name without trust; None if it is one.

    A Keras object is a class deriving from a Keras base class (Layer, Model, Loss, Metric,
    Initializer, Regularizer, Constraint, Optimizer, LearningRateSchedule), or a function
    registered with ``@keras.saving.register_keras_serializable``: any other function of an
    installed package (``joblib.load``) could be called with arguments from the model file.
    """
    if isinstance(obj, type):
        if _keras_kind(obj) is not None:
            return None
        return "is a class deriving from no Keras base class (Layer, Loss, Metric, ...)"
    if isinstance(obj, types.FunctionType):
        import keras

        name = keras.saving.get_registered_name(obj)
        if ">" in name and keras.saving.get_registered_object(name) is obj:
            return None
        return (
            "is a plain function, not registered with Keras "
            "(@keras.saving.register_keras_serializable): Keras could call it with arguments "
            "taken from the model file"
        )
    return f"is a {type(obj).__name__}, neither a Keras class nor a registered Keras function"


def _refused(record: Mapping[str, Any], problem: str) -> UnsafeLoadError:
    target = f"{record['module']}.{record['qualname']}"
    return UnsafeLoadError(
        f"Refusing to import custom {record['kind']} {record['name']!r} ({target}) without "
        f"trust: {problem}.\nIf you made this bundle or trust its source: "
        "Bundle.load(path, trusted=True).",
        parts=[(f"custom object {record['name']!r}", "reference", [target])],
    )


def _not_importable(record: Mapping[str, Any], exc: BaseException) -> ModelError:
    """A custom object that cannot be imported: a missing backend, or a missing package."""
    from .backend import label
    from .portability import MODULE_BACKENDS

    missing = ((exc.name or "") if isinstance(exc, ImportError) else "").split(".")[0]
    what = f"Custom {record['kind']} {record['name']!r} ({record['module']}.{record['qualname']})"
    backend = MODULE_BACKENDS.get(missing)
    if backend is not None:
        from ..errors import BackendError
        from .backend import BACKEND_EXTRAS

        return BackendError(
            f"{what} imports {missing}, which is not installed here: its code needs "
            f'{label(backend)}.\nInstall it (pip install "keras-bundle[{BACKEND_EXTRAS[backend]}]'
            f'") and load the bundle with KERAS_BACKEND={backend}, or rewrite the object with '
            "keras.ops, which run on every backend.",
            parts=[what],
            needs=[backend],
            running=_running_backend(),
        )
    if record["storage"] == "value":
        return ModelError(
            f"{what} is stored by value, and unpickling it imports {missing!r}, which cannot "
            f"be imported here: {exc}.\nInstall the package that provides {missing!r} in this "
            "environment (the bundle's requirements.txt pins the training versions)."
        )
    return ModelError(
        f"Custom {record['kind']} {record['name']!r} is stored by reference to "
        f"{record['module']}.{record['qualname']}, which cannot be imported here: {exc}.\n"
        f"Install the package that provides {record['module']!r} in this environment."
    )


def _import_failed(record: Mapping[str, Any], exc: BaseException) -> ModelError:
    return ModelError(
        f"Importing {record['module']} for custom {record['kind']} {record['name']!r} "
        f"failed: {type(exc).__name__}: {exc}.\nThe module's import-time code stopped; "
        "nothing of it was used. Check the package installed for it."
    )


def _running_backend() -> str:
    import sys

    keras = sys.modules.get("keras")
    return str(keras.backend.backend()) if keras is not None else "unknown"
