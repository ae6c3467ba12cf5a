"""`Frame`: what flows between compiled steps, in the NumPy replay and the TensorFlow graph.

A frame is either a list of columns (as read from a DataFrame: each column keeps its own
dtype, text stays text) or one 2-D array. Both backends share the bookkeeping (width,
picking columns, which columns a block reads); a backend subclass says how an array is
made of columns (`np.column_stack` or `tf.stack`) and how columns of an array are taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Frame", "common_dtype", "contiguous"]


def common_dtype(dtypes: Sequence[Any]) -> Any:
    """NumPy's common dtype of any number of dtypes (`np.result_type` takes at most 64)."""
    import functools

    import numpy as np

    return functools.reduce(np.promote_types, dtypes) if dtypes else np.dtype(np.float64)


def contiguous(indices: Sequence[int]) -> slice | None:
    """A slice when `indices` are one increasing run (slicing is then a view), else None."""
    indices = list(indices)
    if indices and indices == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return None


class Frame:
    """A step's input or output: columns, or one 2-D array of `n_rows` rows.

    Subclasses implement `_stack` (columns -> one array), `_take_array` (columns of the
    array), `_dtype_of` (a column's numpy dtype) and `of` (wrap an array).
    """

    __slots__ = ("_array", "_columns", "n_rows")

    def __init__(self, n_rows: Any, *, columns: list[Any] | None = None, array: Any = None):
        self.n_rows = n_rows
        self._columns = columns
        self._array = array

    @classmethod
    def of(cls, array: Any) -> Frame:  # pragma: no cover - backends override
        raise NotImplementedError

    @property
    def is_array(self) -> bool:
        return self._columns is None

    @property
    def width(self) -> int:
        return int(self._array.shape[1]) if self._columns is None else len(self._columns)

    def column(self, j: int) -> Any:
        return self._array[:, j] if self._columns is None else self._columns[j]

    def columns(self) -> list[Any]:
        if self._columns is not None:
            return list(self._columns)
        return [self._array[:, j] for j in range(self.width)]

    def take(self, indices: Sequence[int] | slice) -> Frame:
        """The frame of the given columns (a contiguous run of an array stays a view)."""
        if self._columns is None:
            if not isinstance(indices, slice):
                indices = contiguous(indices) or list(indices)
            return self._take_array(indices)
        if isinstance(indices, slice):
            return type(self)(self.n_rows, columns=self._columns[indices])
        return type(self)(self.n_rows, columns=[self._columns[j] for j in indices])

    def frame(self) -> Frame:
        return self

    @property
    def dtype(self) -> Any:
        if self._columns is None:
            return self._dtype_of(self._array)
        return common_dtype([self._dtype_of(c) for c in self._columns])

    def full(self) -> Any:
        """The frame as one 2-D array of the columns' common dtype."""
        return self._array if self._columns is None else self._stack(self._columns)

    # -- backend ---------------------------------------------------------------------------

    def _stack(self, columns: list[Any]) -> Any:  # pragma: no cover - backends override
        raise NotImplementedError

    def _take_array(self, indices: list[int] | slice) -> Frame:  # pragma: no cover
        raise NotImplementedError

    def _dtype_of(self, column: Any) -> Any:  # pragma: no cover - backends override
        raise NotImplementedError
