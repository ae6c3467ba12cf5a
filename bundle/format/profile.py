"""The training profile stored in a bundle: per-feature statistics of the training data.

Written at save time from the input example (or ``profile_data=``) and read by drift
reports and live serving metrics. Stored without pickle, as two files listed and hashed in
the manifest like every other part::

    profile/profile.json   kinds, counts, quantiles, bins, top categories (readable)
    profile/profile.npz    per feature: the reference sample (sorted unique values and
                           their counts) and the full set of seen categories

A *feature* is one distribution the profile follows: a tabular column, one statistic of one
channel of an array input (``pixels[c0] mean``), a text column's lengths, or one of the
model's outputs (``prediction``, ``score_gold``). Reading checks every key and type, so a
hand-edited profile is refused with `ManifestError` instead of being misread.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundle.errors import ManifestError, UnsupportedFormatError

from .layout import PROFILE_ARRAYS, PROFILE_DIR, PROFILE_FILE

PROFILE_VERSION = 1
"""The profile layout version; a newer one is refused, an older one is read as written."""

KINDS = ("numeric", "categorical", "text")
ROLES = ("input", "output")
REDUCTIONS = ("value", "mean", "std", "length")

__all__ = [
    "KINDS",
    "PROFILE_ARRAYS",
    "PROFILE_FILE",
    "PROFILE_VERSION",
    "FeatureProfile",
    "Profile",
    "read_profile",
    "write_profile",
]


@dataclass(frozen=True)
class FeatureProfile:
    """What training looked like for one feature.

    Attributes:
        name: the display name, unique in the profile (a column name, ``image[c0] mean``).
        role: "input" or "output".
        kind: "numeric", "categorical" or "text" (a text feature is profiled by its lengths).
        source: where the values come from: ``input`` (model input name or None),
            ``column`` (a column name or None), ``channel`` (an array channel or None) and
            ``reduce`` ("value", "mean", "std" per sample, or "length" of a text).
        count: rows profiled. missing: how many of them were missing.
        minimum, maximum, mean, std: over the non-missing finite values (numeric, text).
        quantiles: ``{"0.5": median, ...}`` (numeric, text).
        edges: the inner edges of the PSI bins, values of `reference`; bin i holds
            ``edges[i-1] <= x < edges[i]`` (numeric, text).
        histogram: training counts in the PSI bins (len(edges) + 1 of them).
        reference: the reference sample, sorted unique values (numeric, text; in the .npz).
        reference_counts: how often each reference value occurs in the sample.
        categories: the most frequent training values, as text (categorical).
        category_counts: their training counts. other: training rows with any other value.
        distinct: distinct training values. seen: all of them when that set was small
            enough to keep (in the .npz), else None: unseen values then cannot be told apart.
    """

    name: str
    role: str
    kind: str
    source: Mapping[str, Any]
    count: int
    missing: int
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: Mapping[str, float] | None = None
    edges: tuple[float, ...] | None = None
    histogram: tuple[int, ...] | None = None
    reference: np.ndarray | None = field(default=None, repr=False, compare=False)
    reference_counts: np.ndarray | None = field(default=None, repr=False, compare=False)
    categories: tuple[str, ...] | None = None
    category_counts: tuple[int, ...] | None = None
    other: int = 0
    distinct: int = 0
    seen: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def missing_rate(self) -> float:
        return self.missing / self.count if self.count else 0.0

    @property
    def is_numeric(self) -> bool:
        """True for numeric features and text lengths (both are counted on a number line)."""
        return self.kind in ("numeric", "text")

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "role": self.role,
            "kind": self.kind,
            "source": dict(self.source),
            "count": self.count,
            "missing": self.missing,
        }
        if self.is_numeric:
            data.update(
                minimum=self.minimum,
                maximum=self.maximum,
                mean=self.mean,
                std=self.std,
                quantiles=dict(self.quantiles or {}),
                edges=list(self.edges or ()),
                histogram=list(self.histogram or ()),
            )
        else:
            data.update(
                categories=list(self.categories or ()),
                category_counts=list(self.category_counts or ()),
                other=self.other,
                distinct=self.distinct,
                seen_kept=self.seen is not None,
            )
        return data


@dataclass(frozen=True)
class Profile:
    """The training profile: per-feature statistics of inputs and outputs.

    Attributes:
        rows: rows profiled (after sampling). source_rows: rows offered before sampling.
        features: one `FeatureProfile` per followed distribution, inputs first.
        skipped: input columns not profiled, with why (``{"notes": "object values"}``).
    """

    rows: int
    source_rows: int
    features: tuple[FeatureProfile, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"Profile feature names must be unique; got {names}.")

    def feature(self, name: str) -> FeatureProfile:
        """The feature called `name` (KeyError listing the known ones otherwise)."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"No feature {name!r} in the profile; known: {[f.name for f in self]}.")

    @property
    def inputs(self) -> tuple[FeatureProfile, ...]:
        return tuple(f for f in self.features if f.role == "input")

    @property
    def outputs(self) -> tuple[FeatureProfile, ...]:
        return tuple(f for f in self.features if f.role == "output")

    def __iter__(self):
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to ``profile/profile.json``."""
        return {
            "profile_version": PROFILE_VERSION,
            "rows": self.rows,
            "source_rows": self.source_rows,
            "skipped": dict(self.skipped),
            "features": [feature.to_json() for feature in self.features],
        }

    def record(self) -> dict[str, Any]:
        """The manifest's ``profile`` entry: where the files are and what they hold."""
        return {
            "file": PROFILE_FILE,
            "arrays": PROFILE_ARRAYS,
            "rows": self.rows,
            "source_rows": self.source_rows,
            "inputs": len(self.inputs),
            "outputs": len(self.outputs),
        }

    def __str__(self) -> str:
        return render_profile(self)


# --------------------------------------------------------------------------- writing


def write_profile(profile: Profile, directory: Path) -> dict[str, Any]:
    """Write ``profile/profile.json`` and ``profile/profile.npz`` under `directory`, flushed.

    Returns:
        The manifest record (`Profile.record`).
    """
    folder = Path(directory) / PROFILE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for index, feature in enumerate(profile.features):
        if feature.reference is not None:
            arrays[f"{index}.values"] = np.asarray(feature.reference, dtype=np.float64)
            arrays[f"{index}.counts"] = np.asarray(feature.reference_counts, dtype=np.int64)
        if feature.seen is not None:
            arrays[f"{index}.seen"] = np.asarray(feature.seen, dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    text = json.dumps(profile.to_json(), indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    _write_synced(Path(directory) / PROFILE_FILE, text.encode("utf-8"))
    _write_synced(Path(directory) / PROFILE_ARRAYS, buffer.getvalue())
    return profile.record()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- reading

_FEATURE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "role": (str,),
    "kind": (str,),
    "source": (dict,),
    "count": (int,),
    "missing": (int,),
}
_NUMERIC_KEYS: dict[str, tuple[type, ...]] = {
    "minimum": (int, float, type(None)),
    "maximum": (int, float, type(None)),
    "mean": (int, float, type(None)),
    "std": (int, float, type(None)),
    "quantiles": (dict,),
    "edges": (list,),
    "histogram": (list,),
}
_CATEGORICAL_KEYS: dict[str, tuple[type, ...]] = {
    "categories": (list,),
    "category_counts": (list,),
    "other": (int,),
    "distinct": (int,),
    "seen_kept": (bool,),
}
_SOURCE_KEYS = {"input", "column", "channel", "reduce"}
_TOP_KEYS = {"profile_version", "rows", "source_rows", "skipped", "features"}


def read_profile(directory: Path, record: Mapping[str, Any]) -> Profile:
    """Read the profile a manifest `record` points to, checking every key and type.

    The files were already verified against the manifest's hashes by ``Bundle.load``; this
    checks that what they hold is a profile this package understands. Nothing is unpickled.

    Raises:
        ManifestError: a file is not JSON/NPZ or does not hold a valid profile.
        UnsupportedFormatError: the profile version is newer than this package reads.
    """
    directory = Path(directory)
    source = str(directory / record["file"])
    try:
        data = json.loads((directory / record["file"]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{source} is not a readable JSON profile: {exc}.") from exc
    _check_top(data, source)
    try:
        with np.load(directory / record["arrays"], allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"{directory / record['arrays']} is not a readable NPZ profile: {exc}."
        ) from exc
    features = tuple(
        _read_feature(item, index, arrays, source) for index, item in enumerate(data["features"])
    )
    try:
        return Profile(
            rows=data["rows"],
            source_rows=data["source_rows"],
            features=features,
            skipped=dict(data["skipped"]),
        )
    except ValueError as exc:
        raise ManifestError(f"{source}: {exc}") from exc


def _check_top(data: Any, source: str) -> None:
    if not isinstance(data, dict) or set(data) != _TOP_KEYS:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ManifestError(
            f"{source} is not a keras-bundle profile: expected the keys {sorted(_TOP_KEYS)}, "
            f"got {got}. Restore the bundle from its release."
        )
    version = data["profile_version"]
    if not isinstance(version, int) or version < 1:
        raise ManifestError(f"{source} has an invalid profile_version {version!r}.")
    if version > PROFILE_VERSION:
        raise UnsupportedFormatError(
            f"{source} uses profile version {version}; this keras-bundle reads up to "
            f"{PROFILE_VERSION}. Upgrade keras-bundle (pip install -U keras-bundle).",
            found=version,
            supported=PROFILE_VERSION,
        )
    for key in ("rows", "source_rows"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
            raise ManifestError(f"{source}: {key!r} must be a count, got {data[key]!r}.")
    if not isinstance(data["features"], list) or not isinstance(data["skipped"], dict):
        raise ManifestError(f"{source}: 'features' must be a list and 'skipped' an object.")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that a JSON true/false is not a number."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _read_feature(
    item: Any, index: int, arrays: Mapping[str, np.ndarray], source: str
) -> FeatureProfile:
    where = f"{source}: feature {index}"
    if not isinstance(item, dict):
        raise ManifestError(f"{where} is not a JSON object.")
    kind = item.get("kind")
    if kind not in KINDS or item.get("role") not in ROLES:
        raise ManifestError(
            f"{where} has kind {kind!r} and role {item.get('role')!r}; "
            f"expected a kind in {KINDS} and a role in {ROLES}."
        )
    extra = _NUMERIC_KEYS if kind in ("numeric", "text") else _CATEGORICAL_KEYS
    expected = {**_FEATURE_KEYS, **extra}
    unknown, missing = sorted(set(item) - set(expected)), sorted(set(expected) - set(item))
    wrong = sorted(
        key for key, types in expected.items() if key in item and not _is(item[key], types)
    )
    if unknown or missing or wrong:
        raise ManifestError(
            f"{where} ({item.get('name')!r}) does not match the profile layout: "
            f"unknown keys {unknown}, missing keys {missing}, wrong types {wrong}."
        )
    if set(item["source"]) != _SOURCE_KEYS or item["source"]["reduce"] not in REDUCTIONS:
        raise ManifestError(f"{where} has an invalid source {item['source']!r}.")
    common = {key: item[key] for key in _FEATURE_KEYS}
    if kind in ("numeric", "text"):
        values, counts = arrays.get(f"{index}.values"), arrays.get(f"{index}.counts")
        if (
            values is None
            or counts is None
            or values.ndim != 1
            or values.shape != counts.shape
            or not np.all(np.isfinite(values))
            or not np.all(np.diff(values) > 0)
            or not np.all(counts > 0)
        ):
            raise ManifestError(
                f"{where} ({item['name']!r}) has no valid reference sample: expected sorted "
                "unique finite values, each with a positive count."
            )
        edges = tuple(float(edge) for edge in item["edges"])
        histogram = tuple(int(count) for count in item["histogram"])
        if len(histogram) != len(edges) + 1 or list(edges) != sorted(set(edges)):
            raise ManifestError(
                f"{where} ({item['name']!r}) has {len(edges)} edges and {len(histogram)} "
                "histogram bins; expected strictly increasing edges and one bin more."
            )
        if not np.isin(np.asarray(edges, dtype=np.float64), values).all():
            raise ManifestError(
                f"{where} ({item['name']!r}) has bin edges that are not reference values."
            )
        return FeatureProfile(
            **common,
            minimum=item["minimum"],
            maximum=item["maximum"],
            mean=item["mean"],
            std=item["std"],
            quantiles={str(k): float(v) for k, v in item["quantiles"].items()},
            edges=edges,
            histogram=histogram,
            reference=values.astype(np.float64),
            reference_counts=counts.astype(np.int64),
        )
    if len(item["categories"]) != len(item["category_counts"]):
        raise ManifestError(f"{where} ({item['name']!r}) lists categories and counts unevenly.")
    seen = arrays.get(f"{index}.seen")
    if item["seen_kept"] and seen is None:
        raise ManifestError(f"{where} ({item['name']!r}) lost its seen categories.")
    return FeatureProfile(
        **common,
        categories=tuple(map(str, item["categories"])),
        category_counts=tuple(int(count) for count in item["category_counts"]),
        other=item["other"],
        distinct=item["distinct"],
        seen=seen.astype(str) if seen is not None else None,
    )


# --------------------------------------------------------------------------- display


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4g}"
    return f"{value:.3e}"


def feature_summary(feature: FeatureProfile, *, top: int = 3) -> str:
    """One line about a feature: its range and median, or its most frequent values."""
    if feature.is_numeric:
        quantiles = feature.quantiles or {}
        prefix = "length " if feature.kind == "text" else ""
        return (
            f"{prefix}{_number(feature.minimum)} .. {_number(feature.maximum)}, "
            f"median {_number(quantiles.get('0.5'))}"
        )
    total = max(feature.count - feature.missing, 1)
    shown = ", ".join(
        f"{value} {count / total:.0%}"
        for value, count in zip(
            (feature.categories or ())[:top], (feature.category_counts or ())[:top], strict=False
        )
    )
    more = feature.distinct - min(top, len(feature.categories or ()))
    return shown + (f", ... ({more} more)" if more > 0 else "")


def render_profile(profile: Profile, *, indent: str = "") -> str:
    """The profile as a table: one row per feature."""
    rows = [(f.name, f.role, f.kind, f"{f.missing_rate:.1%}", feature_summary(f)) for f in profile]
    header = ("feature", "role", "kind", "missing", "training distribution")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    intro = f"{indent}{profile.rows:,} rows profiled"
    if profile.source_rows > profile.rows:
        intro += f" (sampled from {profile.source_rows:,})"
    skipped = [f"{indent}not profiled: {name} ({why})" for name, why in profile.skipped.items()]
    return "\n".join([intro, *[line.rstrip() for line in lines], *skipped])
