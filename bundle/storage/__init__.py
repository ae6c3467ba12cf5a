"""Where bundles live: local roots, object storage (fsspec), OCI registries, archives, and
locating them.

The named interface of this package, used by `core` and by the edges (CLI, Spark):

- `open_root(location)`: a `Root` of versions (list, resolve, publish, alias);
- `fetch(location, version)`: any location form -> a local version directory (`locate`
  also says whether a root resolved it; `fetch_verified` also returns its manifest,
  checked against a digest and its files);
- `write_archive` / `extract_archive`: reproducible release archives, extracted safely;
- `oci`: push to and read from OCI registries (`oci.push`, `oci.describe`, `oci.list_tags`,
  `oci.pin`), over the distribution API client `registry`;
- `is_url`, `is_oci`, `split_alias`, `is_archive_name`, `cache_dir`: reading location strings;
- `collect_leftovers` / `reclaim_leftovers`: what killed saves left behind (`bundle gc`).
"""

from __future__ import annotations

from . import oci
from .archives import extract_archive, is_archive_name, write_archive
from .gc import GcReport, Leftover
from .gc import collect as collect_leftovers
from .gc import reclaim as reclaim_leftovers
from .locate import Located, fetch, fetch_verified, locate
from .oci import is_oci
from .paths import cache_dir, is_url, split_alias
from .roots import Root, VersionInfo, open_root

__all__ = [
    "GcReport",
    "Leftover",
    "Located",
    "Root",
    "VersionInfo",
    "cache_dir",
    "collect_leftovers",
    "extract_archive",
    "fetch",
    "fetch_verified",
    "is_archive_name",
    "is_oci",
    "is_url",
    "locate",
    "oci",
    "open_root",
    "reclaim_leftovers",
    "split_alias",
    "write_archive",
]
