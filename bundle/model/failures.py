"""What failed when a model fails: the layer, and for a ``NameError`` the missing global.

Keras rebuilds a ``Lambda`` layer's function from its stored bytecode with the globals of a
Keras module, not those of the script that defined it, so ``Lambda(lambda t:
keras.ops.relu(t) * 0.5)`` works in training and raises ``NameError: name 'keras' is not
defined`` in every process that loads the model. `missing_globals` finds such names
statically, in a rebuilt model; `model_failure` turns any exception of a model call into a
`ModelError` that names the layer it came from.
"""

from __future__ import annotations

import builtins
import dis
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError

__all__ = [
    "LambdaGlobals",
    "describe_batch",
    "missing_globals",
    "model_failure",
    "unresolved_globals_error",
]

_NAME_ERROR = re.compile(r"name '(\w+)' is not defined")
_CALLING = re.compile(r"Exception encountered when calling (\w+)\.call\(\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KERAS_BANNER = re.compile(r"^Exception encountered when calling \w+\.call\(\)\.\s*")


@dataclass(frozen=True)
class LambdaGlobals:
    """A layer whose function reads module globals it cannot see where it was rebuilt."""

    layer: str
    names: tuple[str, ...]


def _layers(model: Any) -> Iterator[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return iter(())
    return iter(flatten(include_self=False, recursive=True))


def _global_loads(code: types.CodeType) -> list[str]:
    """The global names a code object (and the code nested in it) reads, in order."""
    names: list[str] = []
    stack = [code]
    while stack:
        current = stack.pop()
        names += [i.argval for i in dis.get_instructions(current) if i.opname == "LOAD_GLOBAL"]
        stack += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    return list(dict.fromkeys(names))


def _lambda_functions(model: Any) -> Iterator[tuple[Any, types.FunctionType]]:
    for layer in _layers(model):
        function = getattr(layer, "function", None)
        if type(layer).__name__ == "Lambda" and isinstance(function, types.FunctionType):
            yield layer, function


def missing_globals(model: Any) -> list[LambdaGlobals]:
    """Lambda layers of `model` whose function reads globals its rebuilt globals lack.

    Meaningful on a model rebuilt from its file: there the function's globals are the ones
    every serving process gives it.
    """
    found = []
    for layer, function in _lambda_functions(model):
        known = function.__globals__
        missing = [
            name
            for name in _global_loads(function.__code__)
            if name not in known and not hasattr(builtins, name)
        ]
        if missing:
            found.append(LambdaGlobals(str(layer.name), tuple(missing)))
    return found


def _fixes(name: str, *, closure: bool = False) -> str:
    why = (
        "Keras stores the values a lambda takes from its enclosing function as JSON in the "
        "model file, and a module or object does not come back as itself (a module becomes "
        "a dict)."
        if closure
        else "Keras stores a lambda's code, not the module globals it reads: a process that "
        "loads the model rebuilds the function without them."
    )
    return (
        f"{why} Fix the layer in the training code, one of:\n"
        f"- import inside the function: def fn(t): import {name} ... then Lambda(fn), or "
        f"__import__({name!r}) in the lambda (for a module);\n"
        "- pass it as an argument: Lambda(lambda t, scale: t * scale, arguments={'scale': "
        "0.5}) (for a JSON value);\n"
        "- use a registered layer: a keras.layers.Layer subclass with "
        "@keras.saving.register_keras_serializable(), its imports at module level."
    )


def unresolved_globals_error(found: list[LambdaGlobals], label: str) -> ModelError:
    """The refusal for Lambda layers whose globals a loading process would not have."""
    first = found[0]
    lines = [
        f"layer {item.layer!r} (Lambda) reads {', '.join(map(repr, item.names))}" for item in found
    ]
    return ModelError(
        f"{label}: {len(found)} Lambda layer(s) read global names that a process loading the "
        f"model does not define (it would fail with NameError: name {first.names[0]!r} is "
        "not defined):\n"
        + "\n".join(f"- {line}" for line in lines)
        + f"\n{_fixes(first.names[0])}",
        layer=first.layer,
        missing_global=first.names[0],
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _failing_layer(model: Any, exc: BaseException) -> Any:
    """The innermost layer on the exception's stack: a Lambda's function or a layer's method."""
    by_code = {}
    for layer, function in _lambda_functions(model):
        by_code[function.__code__] = layer
    layers = {id(layer) for layer in _layers(model)}
    for error in _chain(exc):
        frames = []
        tb = error.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):
            if frame.f_code in by_code:
                return by_code[frame.f_code]
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in layers:
                return owner
    return None


def _closure_names(layer: Any) -> tuple[str, ...]:
    """The enclosing-function variables a Lambda layer's function reads (none otherwise)."""
    function = getattr(layer, "function", None)
    if type(layer).__name__ != "Lambda" or not isinstance(function, types.FunctionType):
        return ()
    return tuple(function.__code__.co_freevars)


def _clean(message: str) -> str:
    text = _KERAS_BANNER.sub("", _ANSI.sub("", message)).strip()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first[:300]


def model_failure(model: Any, exc: BaseException, where: str) -> ModelError:
    """A `ModelError` for `exc`, raised by `model` on `where` (a batch description).

    Names the layer the failure came from when it can be found (the innermost layer on the
    stack, a Lambda by its function), and for a ``NameError`` the global name and the fix.
    """
    name_error = next((e for e in _chain(exc) if isinstance(e, NameError)), None)
    missing = None
    if name_error is not None:
        match = _NAME_ERROR.search(_ANSI.sub("", str(name_error)))
        missing = getattr(name_error, "name", None) or (match[1] if match else None)
    layer = _failing_layer(model, exc)
    if missing is not None:
        suspects = [item for item in missing_globals(model) if missing in item.names]
        if suspects and (layer is None or all(s.layer != layer.name for s in suspects)):
            layer = next((x for x in _layers(model) if x.name == suspects[0].layer), layer)
    named = f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None else None
    if named is None:
        calling = next((m for e in _chain(exc) if (m := _CALLING.search(str(e)))), None)
        named = f"a {calling[1]} layer" if calling else None
    detail = f"{type(exc).__name__}: {_clean(str(exc))}"
    head = f"The model failed in {named}" if named else "The model failed"
    text = f"{head} on {where}: {detail}"
    freevars = _closure_names(layer)
    if missing is not None:
        text += f"\nThe function reads the global name {missing!r}. " + _fixes(missing)
    elif freevars:
        text += (
            f"\nThe Lambda's function reads {', '.join(map(repr, freevars))} from the function "
            "that defined it. " + _fixes(freevars[0], closure=True)
        )
    else:
        text += "\nThe input passed the bundle's checks; the original exception is chained below."
    return ModelError(
        text,
        layer=None if layer is None else str(layer.name),
        missing_global=missing,
    )


def describe_batch(model_input: Any) -> str:
    """'a batch of shape (n, ...)' for messages; one shape per input for multi-input."""
    if isinstance(model_input, Mapping):
        shapes = ", ".join(f"{k}: {tuple(getattr(v, 'shape', ()))}" for k, v in model_input.items())
        return f"a batch of shapes {{{shapes}}}"
    return f"a batch of shape {tuple(getattr(model_input, 'shape', ()))}"
