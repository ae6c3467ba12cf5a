"""Which Keras backend a model's own code needs: find layers that call ``tf.*`` directly.

A ``.keras`` file is backend-neutral, and so is a layer written with ``keras.ops``. A layer
whose ``call`` uses ``tf.reduce_sum`` (or ``jnp.*``, ``torch.*``) runs only on that backend:
elsewhere it fails deep inside tracing with a message about symbolic tensors. This module
finds such code without running it, by reading the bytecode of the code a forward pass
reaches: each custom layer's ``call`` and ``build``, the methods they call on ``self``, and
the module-level functions they call, and custom activations and Lambda functions. A name
that resolves to a module (or an object) of TensorFlow, JAX or PyTorch is a use of that
backend. Code that asks Keras which backend it runs on (``keras.backend.backend()``) is
taken to branch on it and is not flagged. Keras' own layers that run TensorFlow ops
whatever the backend (the lookup and hashing layers) are listed by name.
"""

from __future__ import annotations

import dis
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError
from .backend import label

__all__ = [
    "TENSORFLOW_LAYERS",
    "BackendUse",
    "backend_error",
    "check_portable",
    "portability_problems",
]

# Top-level packages whose objects tie code to one backend.
MODULE_BACKENDS = {
    "tensorflow": "tensorflow",
    "tf_keras": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "jax",
    "torch": "torch",
}
TENSORFLOW_LAYERS = frozenset(
    {"StringLookup", "IntegerLookup", "TextVectorization", "Hashing", "HashedCrossing"}
)
"""Keras layers whose ``call`` runs TensorFlow ops on every backend (Keras' own notes)."""
# Custom-object kinds that a forward pass (or building the model at load) runs.
FORWARD_KINDS = frozenset(
    {"layer", "model", "activation", "function", "initializer", "constraint", "regularizer"}
)
# Methods a layer runs when it is built and called.
ENTRY_METHODS = ("call", "build", "__call__", "compute_output_shape")
# Names of Keras functions that return the running backend: code calling them branches on it.
BACKEND_QUERIES = frozenset({"backend"})
LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF"})
ATTRIBUTE_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
MAX_DEPTH = 4


@dataclass(frozen=True)
class BackendUse:
    """One place where a model's code calls a backend's library directly.

    Attributes:
        part: what the code belongs to, e.g. ``layer 'scale' (__main__.TfScale)``.
        backend: the backend it needs: ``"tensorflow"``, ``"jax"`` or ``"torch"``.
        uses: what it calls and where, e.g. ``tf.reduce_sum in TfScale.call``.
    """

    part: str
    backend: str
    uses: str

    def __str__(self) -> str:
        return f"{self.part} calls {self.uses}: it needs {label(self.backend)}"


def _backend_of(obj: Any) -> str | None:
    """The backend an object belongs to, from its (or its module's) top-level package."""
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
    elif type(obj).__name__ == "LazyModule":  # keras.src.utils.module_utils.LazyModule
        name = str(getattr(obj, "name", ""))
    else:
        name = getattr(obj, "__module__", None) or ""
        if not isinstance(name, str):
            return None
    top = name.split(".")[0]
    if top == "keras" and name.startswith("keras.src.backend."):
        return MODULE_BACKENDS.get(name.split(".")[3]) if name.count(".") >= 3 else None
    return MODULE_BACKENDS.get(top)


def _is_keras(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return isinstance(module, str) and module.split(".")[0] in ("keras", "builtins")


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


class _Scanner:
    """Walks the code reachable from a part's entry points, collecting backend uses."""

    def __init__(self) -> None:
        self.uses: dict[str, list[str]] = {}
        self.branches = False  # the code asks Keras which backend it runs on
        self._seen: set[int] = set()

    def scan_class(self, cls: type, methods: Iterable[str] = ENTRY_METHODS) -> None:
        for name in methods:
            for owner in cls.__mro__:
                if _is_keras(owner) or name not in vars(owner):
                    continue
                function = _function_of(vars(owner)[name])
                if function is not None:
                    self.scan_function(function, cls=cls, depth=0)
                break

    def scan_function(self, function: Any, *, cls: type | None = None, depth: int = 0) -> None:
        code = getattr(function, "__code__", None)
        if code is None or id(code) in self._seen or depth > MAX_DEPTH:
            return
        self._seen.add(id(code))
        where = getattr(function, "__qualname__", getattr(function, "__name__", "?"))
        namespace = dict(getattr(function, "__globals__", {}) or {})
        for cell_name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
            try:
                namespace[cell_name] = cell.cell_contents
            except ValueError:  # an empty cell
                continue
        for inner in _code_objects(code):
            self._scan_code(inner, namespace, where, cls, depth)

    def _scan_code(
        self,
        code: types.CodeType,
        namespace: Mapping[str, Any],
        where: str,
        cls: type | None,
        depth: int,
    ) -> None:
        instructions = list(dis.get_instructions(code))
        for index, instruction in enumerate(instructions):
            chain = _attribute_chain(instructions, index + 1)
            attribute = chain[0] if chain else None
            if instruction.opname in ATTRIBUTE_LOADS and instruction.argval in BACKEND_QUERIES:
                self.branches = True
            if instruction.opname == "LOAD_FAST" and instruction.argval == "self" and cls:
                # self.helper(...): scan the helper too, if the class defines it
                if attribute is not None:
                    self.scan_class(cls, (str(attribute),))
                continue
            if instruction.opname not in LOADS or instruction.argval not in namespace:
                continue
            name, obj = str(instruction.argval), namespace[instruction.argval]
            if _is_keras(obj) and getattr(obj, "__name__", None) in BACKEND_QUERIES:
                self.branches = True  # from keras.backend import backend
            backend = _backend_of(obj)
            if backend is not None:
                used = ".".join([name, *chain])
                self.uses.setdefault(backend, []).append(f"{used} in {where}")
            elif isinstance(obj, types.FunctionType) and not _is_keras(obj):
                self.scan_function(obj, cls=cls, depth=depth + 1)
            elif isinstance(obj, types.ModuleType) and attribute:
                # module.helper(...) of a user module: scan the helper
                target = getattr(obj, str(attribute), None)
                if isinstance(target, types.FunctionType) and not _is_keras(target):
                    self.scan_function(target, cls=cls, depth=depth + 1)


def _attribute_chain(instructions: list[dis.Instruction], start: int) -> list[str]:
    """The attribute names loaded one after another from `start`: ``["math", "tanh"]``."""
    chain = []
    for instruction in instructions[start:]:
        if instruction.opname not in ATTRIBUTE_LOADS:
            break
        chain.append(str(instruction.argval))
    return chain


def _function_of(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member if isinstance(member, types.FunctionType) else None


def _uses_of(obj: Any) -> dict[str, list[str]]:
    """Backend -> uses, for a class (its forward-pass methods) or a function."""
    scanner = _Scanner()
    if isinstance(obj, type):
        if _is_keras(obj):
            return {}
        scanner.scan_class(obj)
    elif isinstance(obj, types.FunctionType):
        scanner.scan_function(obj)
    elif not _is_keras(type(obj)):  # an instance of a custom class (a callable object)
        scanner.scan_class(type(obj), ("__call__", "call"))
    return {} if scanner.branches else scanner.uses


def _qualified(obj: Any) -> str:
    obj = obj if isinstance(obj, (type, types.FunctionType)) else type(obj)
    return f"{obj.__module__}.{obj.__qualname__}"


def _layer_uses(model: Any) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """``(description, backend -> uses)`` for each layer's code a forward pass runs."""
    layers = model._flatten_layers(include_self=True, recursive=True)
    for layer in layers:
        cls = type(layer)
        part = f"layer {layer.name!r} ({_qualified(cls)})"
        if _is_keras(cls) and cls.__name__ in TENSORFLOW_LAYERS:
            yield part, {"tensorflow": [f"TensorFlow ops in {cls.__name__}.call"]}
        elif not _is_keras(cls):
            yield part, _uses_of(cls)
        function = getattr(layer, "function", None)  # a Lambda layer's function
        if isinstance(function, types.FunctionType):
            yield f"layer {layer.name!r} (Lambda {function.__qualname__})", _uses_of(function)
        for attribute in ("activation", "recurrent_activation"):
            value = vars(layer).get(attribute)
            if isinstance(value, types.FunctionType) and not _is_keras(value):
                part = f"activation {value.__qualname__!r} of layer {layer.name!r}"
                yield part, _uses_of(value)


def portability_problems(
    *,
    backend: str,
    model: Any = None,
    custom_objects: Mapping[str, Any] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> list[BackendUse]:
    """Every place in `model` or `custom_objects` that needs a backend other than `backend`.

    Args:
        backend: the backend Keras runs on here.
        model: a loaded Keras model: its layers, Lambda functions and custom activations.
        custom_objects: ``{name: object}`` before the model is loaded (building the model
            runs them); `kinds` maps names to their kind, and training-only kinds (losses,
            metrics, optimizers) are skipped.
    """
    problems: dict[tuple[str, str], BackendUse] = {}

    def add(part: str, uses: Mapping[str, list[str]]) -> None:
        for needed, where in uses.items():
            if needed != backend and (part, needed) not in problems:
                problems[(part, needed)] = BackendUse(part, needed, ", ".join(where[:3]))

    for name, obj in (custom_objects or {}).items():
        kind = (kinds or {}).get(name, "object")
        if kind in FORWARD_KINDS or kind == "object":
            add(f"custom {kind} {name!r} ({_qualified(obj)})", _uses_of(obj))
    if model is not None:
        for part, uses in _layer_uses(model):
            add(part, uses)
    return list(problems.values())


def check_portable(
    *,
    backend: str,
    label_: str,
    model: Any = None,
    custom_objects: Mapping[str, Any] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> None:
    """Refuse a model whose code needs another backend than `backend` (see the module doc).

    Raises:
        BackendError: naming each such layer, what it calls, and the backend it needs.
    """
    problems = portability_problems(
        backend=backend, model=model, custom_objects=custom_objects, kinds=kinds
    )
    if problems:
        raise backend_error(problems, backend=backend, label_=label_)


def backend_error(problems: list[BackendUse], *, backend: str, label_: str) -> BackendError:
    """The refusal for `problems`: the parts, what they call, and where to run instead."""
    needs = sorted({p.backend for p in problems})
    lines = [f"- {problem}" for problem in problems[:5]]
    if len(problems) > 5:
        lines.append(f"... ({len(problems) - 5} more)")
    if len(needs) == 1:
        remedy = (
            f"Load it in a process where Keras runs on {label(needs[0])} "
            f"(KERAS_BACKEND={needs[0]}), or rewrite these parts with keras.ops, which run "
            "on every backend."
        )
    else:
        remedy = "Rewrite these parts with keras.ops, which run on every backend."
    return BackendError(
        f"{label_} cannot run on {label(backend)}, the backend Keras runs on here: "
        f"{len(problems)} part(s) of the model call another backend's library directly:\n"
        + "\n".join(lines)
        + f"\n{remedy}",
        parts=[p.part for p in problems],
        needs=needs,
        running=backend,
    )
