"""Location strings: local paths, fsspec URLs, ``root@alias``, and the local cache folder."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "KERAS_BUNDLE_CACHE"

__all__ = ["CACHE_ENV", "cache_dir", "is_url", "local_path", "split_alias"]


def cache_dir() -> Path:
    """Where remote bundles and extracted archives are kept (``$KERAS_BUNDLE_CACHE``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keras-bundle"
    return Path(os.environ.get(CACHE_ENV, default))


def is_url(location: str | Path) -> bool:
    """True for fsspec URLs other than ``file://`` (those are local paths)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str | Path) -> Path:
    text = str(location)
    return Path(text[len("file://") :]) if text.startswith("file://") else Path(text)


def split_alias(location: str | Path) -> tuple[str, str | None]:
    """``"models/churn@production"`` -> ``("models/churn", "production")``.

    ``oci://`` locations are returned whole: their ``@`` starts a digest, not an alias.
    """
    text = str(location)
    if text.startswith("oci://"):
        return text, None
    head, _, tail = text.rpartition("/")
    if "@" in tail:
        name, _, alias = tail.rpartition("@")
        return (f"{head}/{name}" if head else name), alias
    return text, None
