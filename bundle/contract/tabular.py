"""`TabularSchema`: named columns, from DataFrames, records, dicts or positional rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import MAX_LISTED
from .base import SCHEMA_READERS, InputSchema, _Checked
from .columns import _TABULAR_FIELDS, ColumnSpec, _check_fields
from .convert import _SERIES_BUILDERS, _convert, _Converted, _values_from_series
from .messages import (
    _capped,
    _fmt_number,
    _fmt_shape,
    _name_mismatch,
    _plural,
    _Problem,
    _show,
    _sorted,
    _table,
    _unsupported,
    _Where,
)
from .names import NameConflict, match_by_text
from .plain import plain_frame

_TABULAR_FORMS = (
    "a pandas DataFrame",
    "a list of dicts (JSON records)",
    "a dict of column -> list (columnar JSON)",
    "a dict of column -> value, or a pandas Series (one row)",
    "a 2-D numpy array or list of lists (columns by position, in training order)",
)


@dataclass(frozen=True)
class TabularSchema(InputSchema):
    """A DataFrame input: named columns, each with its kind and training dtype."""

    columns: tuple[ColumnSpec, ...]
    kind: ClassVar[str] = "tabular"

    def __post_init__(self) -> None:
        repeated = _sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"Column names must be unique; repeated: {', '.join(map(str, repeated))}."
            )

    @property
    def names(self) -> list[Any]:
        return [column.name for column in self.columns]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": [column.to_dict() for column in self.columns]}

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> TabularSchema:
        _check_fields(d, _TABULAR_FIELDS, _TABULAR_FIELDS, "a tabular schema")
        return cls(tuple(ColumnSpec.from_dict(column) for column in d["columns"]))

    def n_rows(self, canonical: pd.DataFrame) -> int:
        return len(canonical)

    def __str__(self) -> str:
        rows = [
            (str(c.name), c.kind, c.dtype or "?", _missing_label(c), _range_label(c))
            for c in self.columns
        ]
        header = ("column", "kind", "dtype", "missing", "range / categories")
        return (
            f"Tabular input: {_plural(len(self.columns), 'column')}, matched by name "
            f"(order does not matter)\n{_table(header, rows)}"
        )

    def _check(self, raw: Any, strict: bool, subject: str) -> _Checked:
        if isinstance(raw, pd.DataFrame):
            canonical = self._already_canonical(raw)
            if canonical is not None:
                return _Checked(canonical, [])
        elif isinstance(raw, (list, Mapping)):
            # JSON records or columns whose values have the training types already.
            canonical = plain_frame(self.columns, self._known_sets, self._index, self._names, raw)
            if canonical is None and self._text_names is not None:  # "0" for a recorded 0
                args = (self.columns, self._known_sets, self._index, self._text_names, raw)
                canonical = plain_frame(*args)
            if canonical is not None:
                return _Checked(canonical, [])
        frame, problems = _read_frame(raw, self.names, subject)
        if frame is None:
            return _Checked(None, problems)
        renames, conflicts = match_by_text(frame.columns, self.names)
        if conflicts:
            return _Checked(None, [_conflict_problem(conflict, subject) for conflict in conflicts])
        if renames:
            frame = frame.rename(columns=renames)
        problems, extra = _column_problems(frame, self.names, subject, strict)
        built, column_problems = self._convert_columns(frame, subject)
        problems += column_problems
        if problems:
            return _Checked(None, problems, extra)
        if all(built[name] is None for name in self.names):
            canonical = frame[self.names]  # already canonical; copy-on-write shares the data
        else:
            # Positional assembly: a raw index may repeat labels, which alignment cannot take.
            columns = {
                name: frame[name].reset_index(drop=True) if series is None else series
                for name, series in built.items()
            }
            canonical = pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))
            canonical.index = frame.index
        return _Checked(canonical, [], [str(name) for name in extra])

    @cached_property
    def _index(self) -> pd.Index:
        return pd.Index(self.names)

    @cached_property
    def _names(self) -> tuple[Any, ...]:
        return tuple(self.names)

    @cached_property
    def _text_names(self) -> tuple[str, ...] | None:
        """The names as text, where some are not text and the texts are distinct; else None."""
        texts = tuple(str(name) for name in self.names)
        if all(isinstance(name, str) for name in self.names) or len(set(texts)) < len(texts):
            return None
        return texts

    @cached_property
    def _known_sets(self) -> list[frozenset[Any] | None]:
        return [
            None if column.known_values is None else frozenset(column.known_values)
            for column in self.columns
        ]

    @cached_property
    def _training_dtypes(self) -> list[Any]:
        return [column.pandas_dtype for column in self.columns]

    @cached_property
    def _guarded(self) -> list[tuple[ColumnSpec, frozenset[Any] | None]]:
        """Columns whose values need a look even when their dtype is the training one."""
        return [
            (column, None if column.known_values is None else frozenset(column.known_values))
            for column in self.columns
            if not column.allows_missing
            or column.known_values is not None
            or column.refuses_infinity
        ]

    def _already_canonical(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """`frame` (columns put in order) when it needs no conversion; else None.

        The fast path for the common case, a DataFrame with the training columns and dtypes:
        one dtype comparison per column, and a value check only for the columns that refuse
        missing values or unseen categories. Anything else (and every refusal) goes through
        the full path, so this never accepts what the full path would convert or refuse.
        """
        names = self.names
        if len(frame.columns) != len(names) or frame.columns.has_duplicates:
            return None
        if list(frame.columns) != names:
            if set(frame.columns) != set(names):
                return None
            frame = frame[names]
        for dtype, expected in zip(frame.dtypes.tolist(), self._training_dtypes, strict=True):
            if expected is not None and dtype != expected:
                return None
        for column, known in self._guarded:
            series = frame[column.name]
            missing = series.isna()
            if series.dtype == object and missing.any():
                return None  # missing sentinels may need normalizing: the full path does it
            if not column.allows_missing and missing.any():
                return None
            if column.refuses_infinity and series.dtype.kind == "f" and np.isinf(series).any():
                return None
            if known is not None and not _all_known(series[~missing].tolist(), known):
                return None
        return frame

    def _convert_columns(
        self, frame: pd.DataFrame, subject: str
    ) -> tuple[dict[Any, pd.Series | None], list[_Problem]]:
        """Each present column converted (None where it is canonical already), and problems."""
        suffix = "" if subject == "Input" else f" of {subject[0].lower()}{subject[1:]}"
        duplicated = set(frame.columns[frame.columns.duplicated()])
        built: dict[Any, pd.Series | None] = {}
        problems: list[_Problem] = []
        for spec in self.columns:
            if spec.name not in frame.columns or spec.name in duplicated:
                continue
            raw = frame[spec.name]
            where = _Where(f"Column {spec.name!r}{suffix}", str(spec.name), (len(frame),))
            converted = _convert(_values_from_series(raw), spec, where)
            problems += converted.problems
            if not converted.problems:
                built[spec.name] = _built_series(raw, converted, spec)
        return built, problems


def _all_known(values: list[Any], known: frozenset[Any]) -> bool:
    try:
        return all(value in known for value in values)
    except TypeError:  # unhashable values: the full path reports them
        return False


def _built_series(raw: pd.Series, converted: _Converted, spec: ColumnSpec) -> pd.Series | None:
    """The canonical column, or None when the raw column is canonical already."""
    same_missing = raw.dtype != object or not converted.mask.any() or spec.kind == "any"
    if spec.pandas_dtype is None or (raw.dtype == spec.pandas_dtype and same_missing):
        return None
    return _SERIES_BUILDERS[spec.kind](converted, spec)


def _missing_label(column: ColumnSpec) -> str:
    if column.has_missing:
        return "yes"
    if column.missing_handled:
        return "imputed"
    return "unchecked" if column.has_missing is None else "no"


def _range_label(column: ColumnSpec) -> str:
    if column.minimum is not None:
        return f"{_fmt_number(column.minimum)} .. {_fmt_number(column.maximum)}"
    values = column.closed_categories or column.categories or column.dtype_categories
    if not values:
        return ""
    text = ", ".join(_show(value) for value in values[:MAX_LISTED])
    if len(values) > MAX_LISTED or column.categories_truncated:
        more = "over " if column.categories_truncated and not column.closed_categories else ""
        text += f" ... ({more}{len(values):,} in all)"
    return f"closed: {text}" if column.closed_categories is not None else text


def _column_problems(
    frame: pd.DataFrame, names: Sequence[Any], subject: str, strict: bool
) -> tuple[list[_Problem], list[Any]]:
    """Missing, duplicated and (with strict) unknown columns; and the unknown ones."""
    known = set(names)
    present = set(frame.columns)
    missing = [name for name in names if name not in present]
    extra = list(dict.fromkeys(column for column in frame.columns if column not in known))
    duplicated = _sorted(
        {column for column in frame.columns[frame.columns.duplicated()] if column in known}
    )
    problems = []
    if missing or (extra and strict):
        remedy = (
            "Rename or add these columns. Column order does not matter for a DataFrame."
            if missing
            else "Drop these columns, or call with strict=False to ignore them with a warning."
        )
        if missing and _unnamed(frame.columns):
            remedy += (
                "\nThe input's columns look unnamed (0, 1, ...): name them, or pass df.to_numpy()."
            )
        text = _name_mismatch(
            missing,
            extra,
            total=len(names),
            nouns=("column", "column"),
            subject=subject,
            remedy=remedy,
        )
        problems.append(_Problem(text, str(missing[0]) if missing else str(_sorted(extra)[0])))
    if duplicated:
        text = (
            f"{subject} has {_plural(len(duplicated), 'column name')} more than once:\n"
            f"{_capped([str(name) for name in duplicated], len(duplicated))}\n"
            "Give every column a unique name."
        )
        problems.append(_Problem(text, str(duplicated[0])))
    return problems, ([] if missing or strict else extra)


def _conflict_problem(conflict: NameConflict, subject: str) -> _Problem:
    """The message for a recorded column that text names reach ambiguously."""
    name, columns = conflict.name, conflict.columns
    if conflict.recorded:
        text = (
            f"{subject} has no column {name!r}, and its column {columns[0]!r} cannot stand for "
            f"it: the bundle records both {name!r} and {columns[0]!r}, which text names (JSON, "
            "CSV, Parquet) cannot tell apart.\nPass a DataFrame whose column names have the "
            f"training types ({type(name).__name__} {name!r}, "
            f"{type(columns[0]).__name__} {columns[0]!r})."
        )
    else:
        shown = " and ".join(f"{column!r}" for column in columns)
        text = (
            f"{subject} has {len(columns)} columns that name the bundle's column {name!r}: "
            f"{shown} (a name is matched exactly, else by its text).\n"
            "Keep one of them, or rename the other."
        )
    return _Problem(text, str(name))


def _unnamed(columns: pd.Index) -> bool:
    return list(columns) == list(range(len(columns))) and len(columns) > 0


def _read_frame(
    raw: Any, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    """Any accepted tabular raw form as a DataFrame (not yet validated)."""
    if len(names) == 1:
        column = _one_column(raw, names[0])
        if column is not None:
            return column, []
    reader = next((read for types, read in _FRAME_READERS if isinstance(raw, types)), None)
    if reader is None:
        return None, [_unsupported(raw, subject, _TABULAR_FORMS)]
    try:
        return reader(raw, names, subject)
    except (TypeError, ValueError, OverflowError) as exc:
        text = f"{subject} could not be read as a table: {str(exc).splitlines()[0]}"
        return None, [_Problem(text)]


def _one_column(raw: Any, name: Any) -> pd.DataFrame | None:
    """A table of one column from its values alone, or None for the general readers.

    With one column there is no ambiguity: one value (a str, a number) is one row; a list,
    tuple, 1-D array, pyarrow array, or a Series that is not a row keyed by the column
    name, holds one value per row. Rows of values (lists, dicts) go to the general readers.
    """
    if isinstance(raw, (str, bytes, int, float, np.generic)) and not isinstance(raw, np.ndarray):
        return pd.DataFrame({name: [raw]})
    if isinstance(raw, pd.Series):
        if name in raw.index:
            return None  # one row as a Series keyed by column names
        return pd.DataFrame({name: raw.reset_index(drop=True)})
    if isinstance(raw, np.ndarray):
        return pd.DataFrame({name: raw}) if raw.ndim == 1 and len(raw) != 1 else None
    if isinstance(raw, (list, tuple)):
        if not raw or any(_is_listlike(v) or isinstance(v, Mapping) for v in raw):
            return None
        return pd.DataFrame({name: pd.Series(list(raw), dtype=object)})
    if type(raw).__module__.startswith("pyarrow") and hasattr(raw, "to_pandas"):
        if hasattr(raw, "column_names"):  # a pyarrow Table: its columns by name
            return raw.to_pandas()
        return pd.DataFrame({name: raw.to_pandas().reset_index(drop=True)})
    return None


def _frame_from_frame(
    raw: pd.DataFrame, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame, list]:
    return raw, []


def _frame_from_series(
    raw: pd.Series, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame, list]:
    return raw.to_frame().T.reset_index(drop=True), []


def _frame_from_array(
    raw: np.ndarray, names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    rows = raw[np.newaxis] if raw.ndim == 1 and len(raw) == len(names) else raw
    if rows.ndim != 2 or rows.shape[1] != len(names):
        return None, [_width_problem(raw.shape, names, subject)]
    return pd.DataFrame(rows, columns=list(names)), []


def _frame_from_dict(
    raw: Mapping[Any, Any], names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    listlike = {key: _is_listlike(value) for key, value in raw.items()}
    if not any(listlike.values()):
        return pd.DataFrame({key: [value] for key, value in raw.items()}), []
    if not all(listlike.values()):
        lists = _sorted(str(key) for key, is_list in listlike.items() if is_list)
        scalars = _sorted(str(key) for key, is_list in listlike.items() if not is_list)
        text = (
            f"{subject} is a dict that mixes lists ({lists[0]!r}) and single values "
            f"({scalars[0]!r}).\nMap every column to a list of values (columns), or every "
            "column to one value (one row)."
        )
        return None, [_Problem(text, scalars[0])]
    columns = {key: _column_values(value) for key, value in raw.items()}
    lengths = {key: len(value) for key, value in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = [
            f"{key}: {length:,} values"
            for key, length in sorted(lengths.items(), key=lambda kv: str(kv[0]))
        ]
        text = (
            f"{subject} has columns of different lengths:\n{_capped(shown, len(shown))}\n"
            "Give every column one value per row (null for missing)."
        )
        return None, [_Problem(text)]
    return pd.DataFrame(columns), []


def _is_listlike(value: Any) -> bool:
    return isinstance(
        value, (list, tuple, np.ndarray, pd.Series, pd.Index, pd.api.extensions.ExtensionArray)
    )


def _column_values(value: Any) -> Any:
    """One column of a columnar dict, without a pandas index (so nothing realigns)."""
    if isinstance(value, (pd.Series, pd.Index)):
        return value.array
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise ValueError(f"a column must be 1-D, got an array of shape {value.shape}")
    return value


def _frame_from_list(
    raw: Sequence[Any], names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    if not raw:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in names}), []
    if all(isinstance(item, Mapping) for item in raw):
        return pd.DataFrame(list(raw)), []
    if all(_is_listlike(item) for item in raw):
        return _frame_from_rows(raw, names, subject)
    if not any(_is_listlike(item) or isinstance(item, Mapping) for item in raw):
        if len(raw) != len(names):
            return None, [_width_problem((len(raw),), names, subject)]
        return pd.DataFrame([list(raw)], columns=list(names)), []
    text = (
        f"{subject} is a list that mixes rows, records and single values.\n"
        "Send a list of rows (lists), a list of records (dicts), or one row."
    )
    return None, [_Problem(text)]


def _frame_from_rows(
    rows: Sequence[Any], names: Sequence[Any], subject: str
) -> tuple[pd.DataFrame | None, list[_Problem]]:
    lengths = [len(row) for row in rows]
    if len(set(lengths)) == 1:
        if lengths[0] != len(names):
            return None, [_width_problem((len(rows), lengths[0]), names, subject)]
        return pd.DataFrame([list(row) for row in rows], columns=list(names)), []
    wrong = [i for i, length in enumerate(lengths) if length != len(names)]
    shown = [f"row {i}: {lengths[i]:,} values" for i in wrong[:MAX_LISTED]]
    text = (
        f"{subject} has {len(wrong):,} of {_plural(len(rows), 'row')} without "
        f"{len(names):,} values, one per column the bundle expects:\n{_capped(shown, len(wrong))}\n"
        "Rows are matched to the columns by position; give every row all columns."
    )
    return None, [_Problem(text)]


def _width_problem(shape: tuple[int, ...], names: Sequence[Any], subject: str) -> _Problem:
    """The wrong number of columns in positional (array or list) input."""
    width = len(names)
    got = (
        f"{shape[-1]:,} columns instead of {width:,}"
        if len(shape) == 2
        else f"a table of {width:,} columns"
    )
    expected = _fmt_shape((None, width))
    text = f"{subject} has shape {_fmt_shape(shape)}, but the bundle expects {expected}: {got}."
    text += (
        "\nArray input is matched to the columns by position, in training order:\n"
        f"{_capped([str(name) for name in names], width)}\n"
        f"Pass all {width:,} columns in that order, or a DataFrame with named columns."
    )
    return _Problem(text, "axis 1")


_FRAME_READERS: tuple[tuple[type | tuple[type, ...], Callable[..., Any]], ...] = (
    (pd.DataFrame, _frame_from_frame),
    (pd.Series, _frame_from_series),
    (np.ndarray, _frame_from_array),
    (Mapping, _frame_from_dict),
    ((list, tuple), _frame_from_list),
)


SCHEMA_READERS[TabularSchema.kind] = TabularSchema._read
