"""Where a by-reference custom object's module lives, decided before anything is imported.

A custom object stored by reference is a module and a qualified name, imported at load.
Importing a module runs its top-level code, so without ``trusted=True`` a reference may only
lead to code that was installed on this machine on purpose: every file the import would
execute (the module and its parent packages' ``__init__``) must be listed in the ``RECORD``
of an installed distribution. That rules out, without importing anything, the standard
library (its modules act on import: ``antigravity``, ``this``), ``__main__`` and every
``__main__`` submodule (``jsonschema.__main__`` runs a command line), the working directory
and anything else on ``sys.path`` that no installer wrote, namespace packages (how a folder
of the working directory, or of a bundle, becomes importable), the sources of an editable
install (a working tree, not a release), and any file inside the bundle.

The finders of ``sys.meta_path`` are asked where each name would come from, exactly as the
import system asks them, but nothing is loaded: only ``find_spec`` is called.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ModuleOrigin", "locate_module", "reference_problem"]


@dataclass(frozen=True)
class ModuleOrigin:
    """Where importing a module would take its code from.

    Attributes:
        module: the dotted module name.
        files: the real paths of the files the import would execute, parents first.
        distributions: the installed distribution owning each file, in the same order
            (None for a file that no installed distribution lists).
    """

    module: str
    files: tuple[str, ...]
    distributions: tuple[str | None, ...]

    @property
    def file(self) -> str:
        """The module's own file (the last one executed)."""
        return self.files[-1]


def reference_problem(module: str, qualname: str, *, inside: Path | None = None) -> str | None:
    """Why the object ``module.qualname`` may not be imported without trust; None if it may.

    Decided from the names and the files on disk alone: nothing is imported. A module that
    is not found at all is no trust problem (nothing can run from it); loading reports it as
    a missing package.

    Args:
        module: the dotted module name recorded in the manifest.
        qualname: the qualified name recorded in the manifest.
        inside: the bundle's directory: no file under it may ever be imported.
    """
    if not module or not all(part.isidentifier() for part in module.split(".")):
        return f"{module!r} is not a module name"
    if not qualname or not all(part.isidentifier() for part in qualname.split(".")):
        return f"{qualname!r} is not the qualified name of a class or function defined in a module"
    if "__main__" in module.split("."):
        return f"{module} is a __main__ module: importing it runs a program"
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return f"{module} is in the standard library, where no Keras object lives"
    try:
        origin = locate_module(module)
    except ImportError as exc:
        return str(exc)
    if origin is None:
        return None
    bundle_dir = os.path.realpath(inside) + os.sep if inside is not None else None
    for file in origin.files:
        if bundle_dir is not None and file.startswith(bundle_dir):
            return f"{module} would be imported from the bundle itself ({file})"
    for file, owner in zip(origin.files, origin.distributions, strict=True):
        if owner is None:
            return (
                f"{module} would be imported from {file}, which no installed distribution "
                "lists (the working directory, an editable install or a stray file)"
            )
    return None


def locate_module(module: str) -> ModuleOrigin | None:
    """Where ``import module`` would take its code from, or None if it would not be found.

    Asks the finders of ``sys.meta_path`` for the module and each parent package, as the
    import system does, without loading any of them (already imported parents are read
    from ``sys.modules``).

    Raises:
        ImportError: the module or a parent is a namespace package or has no file (no owner
            can vouch for it).
    """
    parts = module.split(".")
    files: list[str] = []
    search: Sequence[str] | None = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        spec = _spec_of(name, search)
        if spec is None:
            return None
        origin = spec.origin if getattr(spec, "has_location", False) else None
        if origin is None:
            # A namespace package has no file whose owner could vouch for it, and it is how
            # a directory in the working directory (or a bundle) becomes importable.
            raise ImportError(
                f"{name} is a namespace package or a built-in module (no file): a folder "
                "without __init__.py, such as one in the working directory, which no installed "
                "distribution vouches for"
            )
        files.append(os.path.realpath(origin))
        locations = spec.submodule_search_locations
        if locations is None and depth < len(parts):
            return None  # a module, not a package: `name.x` cannot exist
        search = None if locations is None else list(locations)
    return ModuleOrigin(module, tuple(files), tuple(_owner(file) for file in files))


def _spec_of(name: str, search: Sequence[str] | None) -> Any:
    """The module spec the import system would use for `name`, without loading it."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        spec = getattr(loaded, "__spec__", None)
        if spec is None:
            raise ImportError(f"{name} is imported without a module spec")
        return spec
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(name, search, None)
        if spec is not None:
            return spec
    return None


def _owner(file: str) -> str | None:
    """The installed distribution whose file list names `file` (a real path), or None."""
    for distribution in _distributions():
        base = _base(distribution)
        if not file.startswith(base):
            continue
        relative = os.path.relpath(file, base).replace(os.sep, "/")
        # A substring test of the RECORD text first: parsing every RECORD of a large
        # environment (TensorFlow lists 20,000 files) costs more than reading them.
        text = _record_text(distribution)
        if text is not None and f"\n{relative}," not in text:
            continue
        if relative in _recorded(distribution):
            return distribution.metadata["Name"]
    return None


@cache
def _distributions() -> tuple[importlib.metadata.Distribution, ...]:
    return tuple(importlib.metadata.distributions())


_CACHE: dict[tuple[int, str], Any] = {}


def _cached(distribution: importlib.metadata.Distribution, what: str, compute: Any) -> Any:
    key = (id(distribution), what)
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


def _base(distribution: importlib.metadata.Distribution) -> str:
    """The directory the distribution's file paths are relative to (real, with a separator)."""
    return _cached(
        distribution,
        "base",
        lambda: os.path.realpath(str(distribution.locate_file(""))) + os.sep,
    )


def _record_text(distribution: importlib.metadata.Distribution) -> str | None:
    """The RECORD file's text with a leading newline, or None when it has none."""

    def read() -> str | None:
        try:
            text = distribution.read_text("RECORD")
        except (OSError, ValueError):
            return None
        return None if text is None else "\n" + text

    return _cached(distribution, "record", read)


def _recorded(distribution: importlib.metadata.Distribution) -> frozenset[str]:
    """Every file the distribution installed, as normalized relative POSIX paths."""

    def read() -> frozenset[str]:
        try:
            files = distribution.files or []
        except (OSError, ValueError):
            files = []
        return frozenset(os.path.normpath(str(path)).replace(os.sep, "/") for path in files)

    return _cached(distribution, "files", read)
