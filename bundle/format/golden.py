"""The stored input example and the outputs it produced at save time ("golden outputs").

Written without pickle: DataFrames as Parquet, arrays as ``.npy`` (texts as fixed-width
unicode), several of either (a
multi-input example) as one file per input, so reading them back never executes code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .layout import EXAMPLE_DIR

MAX_EXAMPLE_ROWS = 1000
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6

__all__ = ["read_example", "read_outputs", "write_example", "write_outputs"]


def head(example: Any, rows: int = MAX_EXAMPLE_ROWS) -> Any:
    """The first `rows` rows of an example in any of its forms."""
    if isinstance(example, Mapping):
        return {key: head(value, rows) for key, value in example.items()}
    if hasattr(example, "iloc"):
        return example.iloc[:rows]
    return np.asarray(example)[:rows]


def _write_one(value: Any, stem: Path) -> str:
    if hasattr(value, "to_parquet"):
        path = stem.with_suffix(".parquet")
        value.to_parquet(path, index=False)
    else:
        path = stem.with_suffix(".npy")
        array = storable(value)  # texts as fixed-width unicode: no pickle
        if array is None:
            raise ValueError(
                f"The input example {stem.name!r} holds values that cannot be stored without "
                f"pickle (dtype {np.asarray(value).dtype}): pass numbers, booleans or texts."
            )
        np.save(path, array, allow_pickle=False)
    return path.name


def write_example(example: Any, directory: Path) -> str:
    """Write the example under ``<directory>/example/``; return its path relative to directory."""
    folder = Path(directory) / EXAMPLE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(example, Mapping):
        inputs = folder / "input"
        inputs.mkdir()
        for key, value in example.items():
            _write_one(value, inputs / str(key))
        return f"{EXAMPLE_DIR}/input"
    return f"{EXAMPLE_DIR}/{_write_one(example, folder / 'input')}"


def _read_one(path: Path) -> Any:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path)
    return np.load(path, allow_pickle=False)


def read_example(directory: Path, relative: str) -> Any:
    """Read back what `write_example` wrote."""
    path = Path(directory) / relative
    if path.is_dir():
        return {item.stem: _read_one(item) for item in sorted(path.iterdir())}
    return _read_one(path)


def storable(values: Any) -> np.ndarray | None:
    """`values` as an array ``np.save`` can write without pickle, or None if it cannot."""
    array = np.asarray(values)
    if array.dtype.kind == "O":
        if not all(isinstance(v, str) for v in array.ravel()):
            return None
        array = array.astype(str)
    return array if array.dtype.kind in "biufcUSM" else None


def write_outputs(outputs: Any, path: Path) -> str | None:
    """Write model outputs (an array, or a dict of arrays by output name) next to `path`.

    One array is written to `path` (``.npy``), several to `path` with suffix ``.npz``.

    Returns:
        The name of the file written, or None when a value cannot be stored without pickle.
    """
    if isinstance(outputs, Mapping):
        arrays = {str(key): storable(value) for key, value in outputs.items()}
        if any(value is None for value in arrays.values()):
            return None
        target = path.with_suffix(".npz")
        np.savez(target, **arrays)
        return target.name
    array = storable(outputs)
    if array is None:
        return None
    np.save(path, array, allow_pickle=False)
    return path.name


def read_outputs(path: Path) -> Any:
    """Read back what `write_outputs` wrote."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    return np.load(path, allow_pickle=False)
