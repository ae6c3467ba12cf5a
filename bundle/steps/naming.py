"""How messages and manifests name a step's class."""

from __future__ import annotations

from typing import Any

__all__ = ["class_path"]


def class_path(obj: Any) -> str:
    """``module.Class`` of an object, with sklearn's private submodules folded away."""
    cls = type(obj)
    module = cls.__module__
    if module.startswith("sklearn."):
        module = ".".join(part for part in module.split(".") if not part.startswith("_"))
    return f"{module}.{cls.__qualname__}"
