"""Text inputs: models that take raw strings (a Keras input of ``dtype="string"``).

The input contract of a text model is a table of one text column (a `TabularSchema`), so a
text bundle takes every form a table takes: a DataFrame with that column, JSON records
(``[{"text": "great film"}]``), a dict of columns; and, as any one-column table, a list,
array, Series or pyarrow array of texts (one row each) and one text alone (one row). Texts
may come as ``str``, ``object``, pandas ``string``/``str`` or pyarrow strings; they reach the
model as an array of Python ``str``, shaped as its input: ``(n,)`` for
``keras.Input(shape=(), dtype="string")``, ``(n, 1)`` for ``shape=(1,)``.

A string tensor has no missing value: None or NaN is refused by the contract (the example
had none), or, if the example held some, when the model is reached, with what to do.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SchemaError

STRING = "string"
"""The dtype a model signature records for a Keras string tensor (numpy has none)."""

DEFAULT_COLUMN = "text"
# Names Keras makes up for an unnamed input: not worth being a column name.
_MADE_UP = re.compile(r"(keras_tensor|input_layer|input)(_\d+)?")

__all__ = [
    "DEFAULT_COLUMN",
    "STRING",
    "as_text_table",
    "text_column",
    "text_model_input",
    "text_schema",
]


def text_column(input_name: str | None) -> str:
    """The column name of a text model's input: its Keras name, or "text" if made up."""
    if not input_name or _MADE_UP.fullmatch(str(input_name)):
        return DEFAULT_COLUMN
    return str(input_name)


def as_text_table(example: Any, column: str) -> pd.DataFrame | None:
    """An example of texts as a one-column table, or None when it is not one.

    Texts are a list or tuple of ``str``, a 1-D array of them or one of shape ``(n, 1)``,
    a pandas Series, or a pyarrow array. A DataFrame or a dict is a table already: None.
    """
    if isinstance(example, (pd.DataFrame, dict)):
        return None
    if isinstance(example, pd.Series):
        values = example.reset_index(drop=True)
        return pd.DataFrame({column: values})
    if _is_arrow_array(example):
        return pd.DataFrame({column: example.to_pandas()})
    if isinstance(example, (list, tuple, np.ndarray)):
        array = np.asarray(example, dtype=object)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1 or not all(isinstance(v, str) or _missing(v) for v in array):
            return None
        return pd.DataFrame({column: pd.Series(array, dtype=object)})
    return None


def text_schema(column: str) -> Any:
    """The contract of a text model saved without an example: one text column, no missing."""
    from .columns import ColumnSpec
    from .tabular import TabularSchema

    spec = ColumnSpec(name=column, kind="string", dtype="object", has_missing=False)
    return TabularSchema((spec,))


def _is_arrow_array(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pyarrow") and hasattr(value, "to_pandas") and hasattr(value, "type")


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def text_model_input(x: Any, name: str, shape: list[int | None]) -> np.ndarray:
    """Texts for a string model input named `name` of `shape` (batch axis first).

    A one-column table or an array of shape ``(n, 1)`` feeds an input of shape ``(None,)``
    as its column; values become Python ``str``.

    Raises:
        SchemaError: a value is missing or not text, or the shape does not fit.
    """
    if hasattr(x, "iloc") and getattr(x, "ndim", 1) == 2 and x.shape[1] == 1 and len(shape) == 1:
        x = x.iloc[:, 0]
    array = x.to_numpy(dtype=object) if hasattr(x, "to_numpy") else np.asarray(x, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1 and len(shape) == 1:
        array = array[:, 0]
    if array.ndim != len(shape) or any(
        e is not None and e != g for e, g in zip(shape[1:], array.shape[1:], strict=True)
    ):
        raise SchemaError(
            f"The texts for model input {name!r} have shape {array.shape}, but the model "
            f"takes {tuple(shape)} (None is the batch axis).\nPass one text per row.",
            column=name,
        )
    flat = array.reshape(-1)
    bad = [i for i, value in enumerate(flat) if not isinstance(value, (str, bytes))]
    if bad:
        missing = [i for i in bad if _missing(flat[i])]
        shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        what = "missing (None/NaN)" if len(missing) == len(bad) else "not text"
        raise SchemaError(
            f"Model input {name!r} is a string tensor, but {len(bad):,} of {flat.size:,} "
            f"values are {what} (rows {shown}). A string tensor cannot hold a missing value.\n"
            "Fill them as training did (for instance with the empty string: "
            "fillna('')) before predicting, or give the bundle a preprocess step that does "
            "(SimpleImputer(strategy='constant', fill_value='')).",
            column=name,
        )
    out = np.empty(flat.shape, dtype=object)
    out[:] = [v if isinstance(v, bytes) else str(v) for v in flat]  # bytes pass as they are
    return out.reshape(array.shape)
