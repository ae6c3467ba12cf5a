"""Arrays from ``.npy`` files, memory-mapped and read batch by batch, never whole.

Each batch is copied out of the mapping and its pages handed back to the kernel
(``MADV_DONTNEED``) at once: file pages a process has touched count in its resident memory
until released, so without this a scan of a large file would look like reading it whole.
The process holds about one batch of the file, whatever its size.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["NpyFile", "is_npy", "iter_npy_batches", "open_npy"]


def is_npy(raw: Any) -> bool:
    """Whether `raw` names a ``.npy`` file."""
    return isinstance(raw, (str, os.PathLike)) and os.fspath(raw).lower().endswith(".npy")


@dataclass(frozen=True)
class NpyFile:
    """A ``.npy`` file's header: where its rows start, their shape and dtype."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape[1:])


def open_npy(path: str | os.PathLike[str]) -> NpyFile:
    """Read a ``.npy`` file's header (no data yet).

    Raises:
        UsageError: no such file, not a ``.npy`` file, no batch axis, an object array (which
            would need pickle), or Fortran order (rows are not contiguous).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"No .npy file at {path}.")
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(handle)
        except ValueError as exc:
            raise UsageError(f"{path} is not a .npy file: {exc}") from exc
        offset = handle.tell()
    if dtype.hasobject:
        raise UsageError(f"{path} holds Python objects, which only pickle can read; refused.")
    if len(shape) == 0:
        raise UsageError(f"{path} holds a single value, not rows with a batch axis.")
    if fortran_order and len(shape) > 1:
        raise UsageError(
            f"{path} is stored in Fortran order, so its rows are not contiguous. Save it "
            "with np.save(path, np.ascontiguousarray(array))."
        )
    return NpyFile(path, tuple(int(d) for d in shape), np.dtype(dtype), offset)


def iter_npy_batches(npy: NpyFile, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` of at most `batch_size` rows each, in order."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be a positive number of rows; got {batch_size}.")
    if len(npy) == 0 or npy.row_bytes == 0:
        return
    per_row = math.prod(npy.shape[1:])
    with (
        open(npy.path, "rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapping,
    ):
        for start in range(0, len(npy), batch_size):
            count = min(batch_size, len(npy) - start)
            begin = npy.offset + start * npy.row_bytes
            view = np.frombuffer(mapping, npy.dtype, count * per_row, begin)
            rows = view.reshape(count, *npy.shape[1:]).copy()
            del view  # the mapping closes only without views into it
            _release(mapping, begin, count * npy.row_bytes)
            yield start, rows


def _release(mapping: mmap.mmap, begin: int, length: int) -> None:
    """Hand a batch's pages back to the kernel: re-read from the file if touched again."""
    if not hasattr(mapping, "madvise"):  # pragma: no cover - not on this platform
        return
    first = begin - begin % mmap.PAGESIZE
    mapping.madvise(mmap.MADV_DONTNEED, first, begin + length - first)
