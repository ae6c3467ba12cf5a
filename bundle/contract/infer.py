"""Inferring the contract: from the input example, or from the fitted steps' hints."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from ..errors import bullet_list
from .arrays import ArraySchema
from .base import InputSchema
from .columns import ColumnSpec
from .dtypes import ALL_ARRAYS, KINDS, MAX_CATEGORIES, _dtype_family, _encode_dtype, _numpy_dtype
from .messages import _is_missing, _json_scalar, _plural, _sorted, _type_name
from .multi import MultiInputSchema
from .tabular import TabularSchema


def infer_schema(
    example: Any,
    *,
    missing_handled: Iterable[str] = (),
    closed_categories: Mapping[Any, Sequence[Any]] | None = None,
    infinity_refused: Iterable[str] = (),
    input_names: Sequence[str] | None = None,
) -> InputSchema:
    """Infer the input contract from an input example.

    Args:
        example: a DataFrame, an ndarray (with the batch axis), or a dict of those keyed by
            model input name (a list or tuple works too, with `input_names`).
        missing_handled: columns whose NaN a preprocessing step imputes: NaN passes there
            even if the example had none. For array input only the key "*" (or, in a
            multi-input example, the input's name) counts; other names are ignored, since
            fitted steps call array columns "0", "1", ...
        closed_categories: ``{column: categories}`` for columns whose encoder fails on
            unseen values (``handle_unknown='error'``); unseen values are refused. A missing
            value among the categories means the encoder accepts missing values too.
        infinity_refused: columns whose preprocessing refuses infinity (scikit-learn's
            check_array): the contract refuses it there, naming the column. Array input:
            the key "*" (or the input's name), as for `missing_handled`.
        input_names: the model's input names, to name a multi-input example (or check one).

    Returns:
        A `TabularSchema`, `ArraySchema` or `MultiInputSchema`.

    Raises:
        TypeError: the example is not a DataFrame, ndarray or dict of those.
        ValueError: the example has no batch axis or duplicate column names, or a name in
            `input_names` (or, for a DataFrame, in `missing_handled`/`closed_categories`)
            does not match it.

    Example:
        >>> str(infer_schema(np.zeros((2, 3), np.float32)).to_dict()["shape"])
        '[3]'
    """
    # Fitted steps name columns by str(name), so hints match column names as text.
    hints = _Hints(
        frozenset(map(str, missing_handled)),
        {str(name): values for name, values in (closed_categories or {}).items()},
        frozenset(map(str, infinity_refused)),
    )
    schema = _infer(_named_example(example, input_names), hints)
    if isinstance(schema, TabularSchema):
        _check_hint_names({str(name) for name in schema.names}, hints)
    return schema


@dataclass(frozen=True)
class _Hints:
    """What the fitted steps say about columns: imputed, closed categories, no infinity."""

    handled: frozenset[str]
    closed: Mapping[str, Sequence[Any]]
    refused: frozenset[str]


def _named_example(example: Any, input_names: Sequence[str] | None) -> Any:
    if input_names is None:
        return example
    names = list(input_names)
    if isinstance(example, (list, tuple)):
        if len(example) != len(names):
            raise ValueError(
                f"The example has {len(example)} inputs, but input_names has {len(names)}."
            )
        return dict(zip(names, example, strict=True))
    if isinstance(example, Mapping):
        if set(example) != set(names):
            raise ValueError(
                f"The example's keys {_sorted(example)} are not the model's input names "
                f"{_sorted(names)}."
            )
        return {name: example[name] for name in names}
    if len(names) != 1:
        raise ValueError(
            f"The model has {len(names)} inputs; pass the example as a dict keyed by name."
        )
    return example


def _infer(example: Any, hints: _Hints) -> InputSchema:
    infer = next((fn for types, fn in _INFERERS if isinstance(example, types)), None)
    if infer is None:
        raise TypeError(
            f"Cannot infer an input schema from {_type_name(example)}; pass a pandas DataFrame, "
            "a numpy array, or a dict of those keyed by model input name (np.asarray(x) for lists)."
        )
    return infer(example, hints)


def _infer_tabular(frame: pd.DataFrame, hints: _Hints) -> TabularSchema:
    duplicated = _sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise ValueError(
            f"The example has duplicate column names: {', '.join(map(str, duplicated))}."
        )
    odd = [
        name for name in frame.columns if not isinstance(name, (str, int)) or isinstance(name, bool)
    ]
    if odd:
        raise ValueError(
            f"Column names must be strings, got {odd[0]!r}; use df.columns.astype(str)."
        )
    return TabularSchema(
        tuple(
            _infer_column(frame.iloc[:, i], hints, str(name))
            for i, name in enumerate(frame.columns)
        )
    )


def _infer_column(series: pd.Series, hints: _Hints, name: str) -> ColumnSpec:
    handled, closed = name in hints.handled, hints.closed.get(name)
    kind = _column_kind(series)
    categories, truncated = _seen_categories(series, kind)
    known, closed_has_missing = _split_missing(closed)
    is_categorical = kind == "categorical"
    minimum, maximum = _numeric_range(series, kind)
    return ColumnSpec(
        name=series.name,
        kind=kind,
        dtype=_encode_dtype(series.dtype),
        has_missing=bool(series.isna().any()),
        missing_handled=handled or closed_has_missing,
        missing_value=_missing_value(series) if series.dtype == object else None,
        categories=categories,
        categories_truncated=truncated,
        closed_categories=known,
        dtype_categories=tuple(map(_json_scalar, series.cat.categories))
        if is_categorical
        else None,
        ordered=bool(series.cat.ordered) if is_categorical else False,
        minimum=minimum,
        maximum=maximum,
        refuses_infinity=kind == "float" and name in hints.refused,
    )


def _column_kind(series: pd.Series) -> str:
    family = _dtype_family(series.dtype)
    if family != "object":
        return family
    return "string" if pdt.infer_dtype(series, skipna=True) == "string" else "any"


def _seen_categories(series: pd.Series, kind: str) -> tuple[tuple[Any, ...] | None, bool]:
    if kind not in ("string", "categorical"):
        return None, False
    seen = _sorted(pd.unique(series.dropna().to_numpy(dtype=object)))
    return tuple(map(_json_scalar, seen[:MAX_CATEGORIES])), len(seen) > MAX_CATEGORIES


def _split_missing(closed: Sequence[Any] | None) -> tuple[tuple[Any, ...] | None, bool]:
    """Closed categories without missing values, and whether there was one."""
    if closed is None:
        return None, False
    known = [value for value in closed if not _is_missing(value)]
    return tuple(dict.fromkeys(map(_json_scalar, known))), len(known) < len(closed)


def _numeric_range(series: pd.Series, kind: str) -> tuple[Any, Any]:
    if kind not in ("float", "integer"):
        return None, None
    values = series.dropna().to_numpy(dtype=_numpy_dtype(series.dtype))
    if kind == "float":
        values = values[np.isfinite(values)]
    if not values.size:
        return None, None
    return _json_scalar(values.min()), _json_scalar(values.max())


def _missing_value(series: pd.Series) -> str:
    """The missing value an object column used: "none" if only None, else "nan"."""
    missing = series[series.isna()]
    return "none" if len(missing) and all(value is None for value in missing) else "nan"


def _infer_array(array: np.ndarray, hints: _Hints) -> ArraySchema:
    return _array_schema(array, ALL_ARRAYS in hints.handled, ALL_ARRAYS in hints.refused)


def _array_schema(array: np.ndarray, handled: bool, refused: bool = False) -> ArraySchema:
    if array.ndim == 0:
        raise ValueError("The example must have a batch axis; got a 0-d array.")
    family = _dtype_family(array.dtype)
    dtype = str(array.dtype)
    if family == "object":
        values = pd.Series(array.reshape(-1), dtype=object)
        family = "string" if pdt.infer_dtype(values, skipna=True) == "string" else "any"
    if family == "string":  # texts of any width: fixed-width str would cut longer ones
        dtype = "object"
    return ArraySchema(
        shape=tuple(int(dim) for dim in array.shape[1:]),
        dtype=dtype,
        value_kind=family if family in KINDS and family != "categorical" else "any",
        has_missing=bool(pd.isna(array).any()),
        missing_handled=handled,
        refuses_infinity=refused and family == "float",
    )


def _infer_multi(example: Mapping[str, Any], hints: _Hints) -> MultiInputSchema:
    inputs: dict[str, InputSchema] = {}
    for name, part in example.items():
        if not isinstance(name, str):
            raise ValueError(f"Model input names must be strings, got {name!r}.")
        if isinstance(part, np.ndarray):
            keys = {name, ALL_ARRAYS}
            inputs[name] = _array_schema(
                part, bool(keys & hints.handled), bool(keys & hints.refused)
            )
        elif isinstance(part, pd.DataFrame):
            inputs[name] = _infer_tabular(part, hints)
        else:
            raise TypeError(
                f"Input {name!r} of the example is {_type_name(part)}; pass a DataFrame or ndarray."
            )
    return MultiInputSchema(inputs)


_INFERERS: tuple[tuple[type, Callable[..., InputSchema]], ...] = (
    (pd.DataFrame, _infer_tabular),
    (np.ndarray, _infer_array),
    (Mapping, _infer_multi),
)


def _check_hint_names(columns: set[str], hints: _Hints) -> None:
    """Refuse hints about columns the example does not have: they describe another input."""
    for argument, names in (
        ("missing_handled", hints.handled),
        ("closed_categories", hints.closed),
        ("infinity_refused", hints.refused),
    ):
        unknown = _sorted(set(names) - columns)
        if unknown:
            raise ValueError(
                f"{argument} names {_plural(len(unknown), 'column')} not in the example:\n"
                f"{bullet_list(unknown)}\nThe example's columns: {', '.join(_sorted(columns))}."
            )


def schema_from_hints(
    *,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
    categories: Mapping[str, Sequence[Any]] | None = None,
    model_inputs: Mapping[str, tuple[Sequence[int | None], str]] | None = None,
    missing_handled: Iterable[str] = (),
    closed_categories: Mapping[str, Sequence[Any]] | None = None,
    infinity_refused: Iterable[str] = (),
) -> InputSchema | None:
    """The input contract when there is no input example, from what fitted objects know.

    Precedence: `feature_names` (a fitted step's ``feature_names_in_``) gives a tabular
    schema; else `n_features` (``n_features_in_``) an array of shape ``(None, n)``; else
    `model_inputs` (only meaningful without preprocessing) an array or multi-input schema.
    Kinds and dtypes that cannot be known are "any" (accepted as given) and missing values
    are not checked, except where `closed_categories` refuses unseen values.

    Args:
        feature_names: column names, in order.
        n_features: the number of features of array input.
        categories: ``{column: categories}`` from fitted encoders (``categories_``).
        model_inputs: ``{input name: (shape without batch axis, dtype string)}``.
        missing_handled: as for `infer_schema`.
        closed_categories: as for `infer_schema`.
        infinity_refused: as for `infer_schema` (without an example the kind of a column is
            unknown, so only array input uses it).

    Returns:
        The schema, or None when no hint was given.
    """
    handled = frozenset(missing_handled)
    if feature_names is not None:
        cats, closed = dict(categories or {}), dict(closed_categories or {})
        return TabularSchema(
            tuple(
                _hinted_column(name, cats.get(name), closed.get(name), name in handled)
                for name in feature_names
            )
        )
    if n_features is not None:
        return ArraySchema(
            shape=(int(n_features),),
            missing_handled=ALL_ARRAYS in handled,
            refuses_infinity=ALL_ARRAYS in frozenset(infinity_refused),
        )
    if model_inputs:
        schemas = {
            name: _hinted_array(shape, dtype, bool({name, ALL_ARRAYS} & handled))
            for name, (shape, dtype) in model_inputs.items()
        }
        return next(iter(schemas.values())) if len(schemas) == 1 else MultiInputSchema(schemas)
    return None


def _hinted_column(
    name: Any, categories: Sequence[Any] | None, closed: Sequence[Any] | None, handled: bool
) -> ColumnSpec:
    seen, _ = _split_missing(categories)
    known, closed_has_missing = _split_missing(closed)
    return ColumnSpec(
        name=name,
        missing_handled=handled or closed_has_missing,
        categories=None if seen is None else seen[:MAX_CATEGORIES],
        categories_truncated=seen is not None and len(seen) > MAX_CATEGORIES,
        closed_categories=known,
    )


def _hinted_array(shape: Sequence[int | None], dtype: str | None, handled: bool) -> ArraySchema:
    dims = tuple(None if dim is None else int(dim) for dim in shape)
    try:
        numpy_dtype = np.dtype(dtype) if dtype not in (None, "string") else None
    except TypeError:
        numpy_dtype = None
    if dtype == "string":
        return ArraySchema(dims, "object", "string", None, handled)
    if numpy_dtype is None:
        return ArraySchema(dims, None, "any", None, handled)
    family = _dtype_family(numpy_dtype)
    kind = family if family in KINDS and family != "categorical" else "any"
    return ArraySchema(dims, str(numpy_dtype), kind, None, handled)
