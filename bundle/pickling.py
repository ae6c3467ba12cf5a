"""Pickle helpers: a static scan of what a pickle references, and by-value pickling.

Used at save time to decide between joblib (everything importable from installed
distributions) and cloudpickle (something lives in ``__main__`` or a local module), and to
record in the manifest what each pickle references, so a refusal to load it can say so
without unpickling anything.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import pickletools
import sys
from functools import cache
from typing import Any

__all__ = ["dumps_by_value", "is_installed_module", "needs_by_value", "pickle_globals"]


def _scan(data: bytes) -> set[tuple[str, str]]:
    """``(module, qualname)`` pairs referenced by GLOBAL / INST / STACK_GLOBAL opcodes."""
    found: set[tuple[str, str]] = set()
    strings: list[str | None] = []
    memo: dict[int, str | None] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.add((module, attr))
                strings.append(None)
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2 and None not in (strings[-1], strings[-2]):
                    found.add((str(strings[-2]), str(strings[-1])))
                strings.append(None)
            elif "UNICODE" in name or name in ("SHORT_BINSTRING", "BINSTRING", "STRING"):
                strings.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(arg)))
            else:
                strings.append(None)
    except Exception:
        pass
    return found


def pickle_globals(data: bytes) -> list[str]:
    """The ``module.qualname`` globals a pickle stream references, found without unpickling.

    Reads opcodes only, following the memo for STACK_GLOBAL's two strings, as a static
    analyser would; stops quietly at bytes that are not opcodes.
    """
    return sorted(f"{module}.{name}" for module, name in _scan(data))


def is_installed_module(module: str) -> bool:
    """True for modules of installed distributions and of the standard library."""
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top in _distribution_packages()


@cache
def _distribution_packages() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


def needs_by_value(obj: Any) -> bool:
    """True if a plain pickle of `obj` would not load in a process without the training code.

    That is: pickling fails outright (lambdas, local functions), or the pickle references
    ``__main__`` or a module that is not part of an installed distribution.
    """
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return True
    return any(module == "__main__" or not is_installed_module(module) for module, _ in _scan(data))


def dumps_by_value(obj: Any) -> bytes:
    """cloudpickle `obj`, pickling by value ``__main__`` and every local module it uses."""
    import cloudpickle

    local = sorted(
        {
            module
            for module, _ in _scan(_plain_or_empty(obj))
            if module != "__main__" and not is_installed_module(module) and module in sys.modules
        }
    )
    registered = []
    try:
        for name in local:
            cloudpickle.register_pickle_by_value(sys.modules[name])
            registered.append(name)
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for name in registered:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])


def _plain_or_empty(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return b""
