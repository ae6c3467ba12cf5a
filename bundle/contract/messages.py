"""How the input contract words its refusals: values, lists, tables, and `SchemaError`."""

from __future__ import annotations

import datetime as _dt
import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import MAX_LISTED, SchemaError, bullet_list


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _show(value: Any) -> str:
    """A value as it would be typed, cut to 40 characters."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sorted(values: Iterable[Any], key: Callable[[Any], Any] = lambda value: value) -> list[Any]:
    values = list(values)
    try:
        return sorted(values, key=key)
    except TypeError:  # mixed types: order by their text instead
        return sorted(values, key=lambda value: str(key(value)))


def _capped(lines: Sequence[str], total: int) -> str:
    """`lines` (the first of `total` items) as a bullet list with "... (N more)"."""
    text = bullet_list(lines[:MAX_LISTED])
    if total > MAX_LISTED:
        text += f"\n... ({total - MAX_LISTED:,} more)"
    return text


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return str(tuple(shape))


def _fmt_number(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as an aligned text table under `header`."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _json_scalar(value: Any) -> Any:
    """A category or bound as a JSON value (numpy scalars unwrapped, others as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (pd.Timestamp, _dt.date)):
        return value.isoformat()
    return str(value)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like values are never a missing value
        return False


@dataclass(frozen=True)
class _Problem:
    text: str
    column: str | None = None


@dataclass(frozen=True)
class _Where:
    """Where values sit, for messages: the subject and how to name a position."""

    subject: str  # "Column 'age'", "Input", "Input 'image'"
    column: str | None  # SchemaError.column
    shape: tuple[int, ...]  # the raw shape; positions index its flattening
    unit: str = "row"  # "row" for a column, "sample" for an array

    def locate(self, position: int) -> str:
        if self.unit == "row":
            return f"row {position}"
        index = tuple(int(i) for i in np.unravel_index(position, self.shape))
        return f"index {index[0] if len(index) == 1 else index}"

    def per_unit(self, mask: np.ndarray) -> np.ndarray:
        """Which rows/samples have any flagged value."""
        if len(self.shape) <= 1:
            return mask
        return mask.reshape(self.shape[0], math.prod(self.shape[1:])).any(axis=1)

    def problem(self, text: str) -> _Problem:
        return _Problem(text, self.column)


def _schema_error(problems: Sequence[_Problem]) -> SchemaError:
    texts = [problem.text for problem in problems]
    if len(texts) == 1:
        message = texts[0]
    else:
        message = f"Input does not match what the bundle expects ({len(texts)} problems):\n\n"
        message += "\n\n".join(texts)
    return SchemaError(message, problems=texts, column=problems[0].column)


def _unsupported(raw: Any, subject: str, forms: Sequence[str]) -> _Problem:
    return _Problem(
        f"{subject} of type {_type_name(raw)} is not supported. This bundle accepts:\n"
        + bullet_list(forms, limit=len(forms))
    )


def _name_mismatch(
    missing: Sequence[Any],
    extra: Sequence[Any],
    *,
    total: int,
    nouns: tuple[str, str],
    subject: str,
    remedy: str,
) -> str:
    """The STYLE.md message for missing and unknown names, with certain "did you mean"s."""
    missing_noun, extra_noun = nouns
    suggestions = _suggestions(missing, extra)
    lines = []
    if missing:
        lines.append(
            f"{subject} is missing {len(missing):,} of the {_plural(total, missing_noun)} "
            "that the bundle expects:"
        )
        lines.append(_capped([str(name) for name in _sorted(missing)], len(missing)))
        if extra:
            lines.append(
                f"The input also has {_plural(len(extra), extra_noun)} the bundle does not know:"
            )
    elif extra:
        lines.append(f"{subject} has {_plural(len(extra), extra_noun)} the bundle does not know:")
    if extra:
        shown = [
            f"{name}  (did you mean {suggestions[name]!r}?)" if name in suggestions else str(name)
            for name in _sorted(extra)
        ]
        lines.append(_capped(shown, len(extra)))
    lines.append(remedy)
    return "\n".join(lines)


def _suggestions(missing: Sequence[Any], extra: Sequence[Any]) -> dict[Any, Any]:
    """{extra name: missing name} where one is, unambiguously, a misspelling of the other."""
    by_lower: dict[str, list[Any]] = {}
    for name in extra:
        by_lower.setdefault(str(name).lower(), []).append(name)
    claims: dict[Any, list[Any]] = {}
    for name in missing:
        close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=2, cutoff=0.8)
        if len(close) == 1 and len(by_lower[close[0]]) == 1:
            claims.setdefault(by_lower[close[0]][0], []).append(name)
    return {name: wanted[0] for name, wanted in claims.items() if len(wanted) == 1}
