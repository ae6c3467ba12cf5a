"""An input's column names matched to the recorded ones: exactly, else by their text.

A model trained on ``pd.DataFrame(array)`` records the columns 0, 1, 2, while JSON, CSV and
Parquet name every column by text ("0", "1", "2"). A recorded column the input lacks is
reached through the one input column whose text (``str``) is the recorded name's text, and
the other way round (recorded "0", a DataFrame's 0). The recorded names stay as they are
(old bundles included); only the matching reads text. Where the text cannot tell columns
apart (the input has both 0 and "0", or the bundle records both), nothing is guessed: the
conflict is returned for the caller to refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NameConflict", "match_by_text"]


@dataclass(frozen=True)
class NameConflict:
    """A recorded column its text form reaches ambiguously.

    Attributes:
        name: the recorded column name.
        columns: the input's columns with the same text (the exact one first, if present).
        recorded: True when those columns are other recorded columns (the bundle records
            both 0 and "0" and the input has only one of them).
    """

    name: Any
    columns: tuple[Any, ...]
    recorded: bool = False


def match_by_text(
    present: Iterable[Any], names: Sequence[Any]
) -> tuple[dict[Any, Any], list[NameConflict]]:
    """Input columns to rename to recorded names, and the conflicts text cannot settle.

    Args:
        present: the input's column names.
        names: the recorded column names.

    Returns:
        ``{input column: recorded name}`` for each recorded name the input has only by its
        text, and one `NameConflict` per recorded name reached ambiguously.
    """
    present = list(dict.fromkeys(present))
    exact, known = set(present), set(names)
    if exact == known:
        return {}, []
    by_text: dict[str, list[Any]] = {}
    for column in present:
        by_text.setdefault(str(column), []).append(column)
    renames: dict[Any, Any] = {}
    conflicts: list[NameConflict] = []
    for name in names:
        same_text = by_text.get(str(name), [])
        others = [column for column in same_text if column not in known]
        if name in exact:
            if others:
                conflicts.append(NameConflict(name, (name, *others)))
        elif len(others) == 1:
            renames[others[0]] = name
        elif others:
            conflicts.append(NameConflict(name, tuple(others)))
        elif same_text:
            conflicts.append(NameConflict(name, tuple(same_text), recorded=True))
    return renames, conflicts
