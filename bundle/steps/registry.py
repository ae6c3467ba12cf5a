"""The registry: scikit-learn class -> `Kind`, gathered from the family modules.

Each family module lists its kinds in ``KINDS``; adding a family means adding its module to
`FAMILIES`. A class is looked up exactly (a subclass may hold state its parent's kind does
not know), and an unknown class's error lists the known ones.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from ..errors import UnsupportedFormatError
from . import (
    binning,
    compose,
    decomposition,
    encoders,
    functions,
    imputers,
    labels,
    linear,
    scalers,
    selection,
    text,
)
from .kinds import Kind
from .naming import class_path

__all__ = ["FAMILIES", "KINDS", "KINDS_BY_NAME", "find_kind", "kind_of", "known_classes"]

FAMILIES = (
    scalers,
    functions,
    imputers,
    encoders,
    binning,
    decomposition,
    selection,
    text,
    compose,
    labels,
    linear,
)


def _collect() -> dict[type, Kind]:
    kinds: dict[type, Kind] = {}
    for family in FAMILIES:
        for kind in family.KINDS:
            if kind.cls in kinds:
                raise RuntimeError(f"{kind.cls.__name__} has two kinds")
            kinds[kind.cls] = kind
    return kinds


KINDS: MappingProxyType[type, Kind] = MappingProxyType(_collect())
KINDS_BY_NAME: MappingProxyType[str, Kind] = MappingProxyType(
    {kind.name: kind for kind in KINDS.values()}
)


def find_kind(cls: type) -> Kind | None:
    """The kind of exactly `cls`, or None."""
    return KINDS.get(cls)


def known_classes() -> str:
    """The names of the registered classes, sorted, comma-separated (for messages)."""
    return ", ".join(sorted(kind.cls.__name__ for kind in KINDS.values()))


def kind_of(obj: Any) -> Kind:
    """The kind of `obj`'s class.

    Raises:
        UnsupportedFormatError: the class has no kind; the message lists the known ones.
    """
    kind = KINDS.get(type(obj))
    if kind is None:
        raise UnsupportedFormatError(
            f"{class_path(obj)} has no kind in keras-bundle: it cannot be stored without "
            f"pickle, replayed or exported. Known classes: {known_classes()}.",
            found=class_path(obj),
            supported=sorted(KINDS_BY_NAME),
        )
    return kind
