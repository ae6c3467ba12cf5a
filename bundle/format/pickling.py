"""Pickle helpers: a static scan of what a pickle references, and by-value pickling.

Used at save time to decide between joblib (everything importable from installed
distributions) and cloudpickle (something lives in ``__main__`` or a local module), and to
record in the manifest what each pickle references, so a refusal to load it can say so
without unpickling anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import pickle
import pickletools
import sys
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "dumps_by_value",
    "is_installed_module",
    "is_stdlib_module",
    "local_modules",
    "needs_by_value",
    "pickle_globals",
]


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
    """True for modules of installed distributions (editable ones too) and the stdlib."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in _distribution_packages():
        return True
    origin = _origin(top)
    # An editable install provides the packages directly inside its source directories;
    # a tests/ or examples/ folder next to them is still the user's local code.
    return origin is not None and any(
        os.path.dirname(origin.rstrip(os.sep)) == root for root in _editable_roots()
    )


def is_stdlib_module(module: str) -> bool:
    """True for modules of the Python standard library."""
    return module.split(".")[0] in sys.stdlib_module_names


@cache
def _distribution_packages() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


def _origin(top: str) -> str | None:
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin
    if spec.submodule_search_locations:  # a package: its directory
        origin = next(iter(spec.submodule_search_locations), None)
    return os.path.realpath(origin) if origin else None


@cache
def _editable_roots() -> tuple[str, ...]:
    """Directories that ``pip install -e`` put on sys.path (from each editable .pth file)."""
    roots = []
    for distribution in importlib.metadata.distributions():
        text = distribution.read_text("direct_url.json")
        try:
            editable = bool(text) and json.loads(text).get("dir_info", {}).get("editable")
        except ValueError:
            editable = False
        if not editable:
            continue
        for file in distribution.files or []:
            if file.suffix != ".pth":
                continue
            content = Path(str(distribution.locate_file(file))).read_text(errors="replace")
            for line in content.splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "import ")) and os.path.isdir(line):
                    roots.append(os.path.realpath(line))
    return tuple(roots)


# Where the interpreter and installed packages live: never the user's own code.
_PREFIXES = tuple(
    os.path.realpath(prefix) + os.sep
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
)


def local_modules() -> list[str]:
    """Imported modules that are neither installed nor ``__main__``: a script's own files."""
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name == "__main__" or not file or not file.endswith(".py"):
            continue
        if not os.path.realpath(file).startswith(_PREFIXES) and not is_installed_module(name):
            found.append(name)
    return sorted(found)


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
    """cloudpickle `obj`, pickling ``__main__`` and every local module it uses by value.

    Every local module is registered, not only those a plain pickle would name: a lambda
    cannot be pickled plainly, yet may call a helper from a local module, which must travel
    with it or the pickle will not load where that module is absent.
    """
    import cloudpickle

    registered = []
    try:
        for name in local_modules():
            cloudpickle.register_pickle_by_value(sys.modules[name])
            registered.append(name)
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for name in registered:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])
