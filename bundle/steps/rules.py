"""What the fitted preprocessing says about its raw input, read from the kinds' rules.

The input contract needs facts the example alone does not give: which columns an imputer
fills (NaN is fine there even if the example had none), which columns refuse infinity (so
the contract refuses it, naming the column, before any step runs), which columns an encoder
refuses unseen categories in (``handle_unknown='error'``), and, without an example, the
feature names and count the first step was fitted on. They are read once, at save time,
from each step's kind (`Kind.rules` for a step, `Kind.walk` for a container) and stored in
the manifest's input schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kinds import HANDLED, PASSES, REFUSED

__all__ = ["InputRules", "input_rules", "select_columns", "walk_step"]


@dataclass
class InputRules:
    """Facts about the raw input read from the fitted steps."""

    feature_names: list[str] | None = None
    n_features: int | None = None
    missing_handled: set[str] = field(default_factory=set)
    infinity_refused: set[str] = field(default_factory=set)
    closed_categories: dict[str, list[Any]] = field(default_factory=dict)
    categories: dict[str, list[Any]] = field(default_factory=dict)


def input_rules(steps: Sequence[Any]) -> InputRules:
    """Read the rules from the first step, the one that sees raw input."""
    if not steps:
        return InputRules()
    first = steps[0]
    names = getattr(first, "feature_names_in_", None)
    n_features = getattr(first, "n_features_in_", None)
    columns = [str(n) for n in names] if names is not None else None
    if columns is None and n_features is not None:
        columns = [str(i) for i in range(int(n_features))]
    rules = InputRules(
        feature_names=list(columns) if names is not None else None,
        n_features=int(n_features) if n_features is not None else None,
    )
    if columns:
        walk_step(first, columns, rules, None)
    return rules


def walk_step(obj: Any, columns: list[str], into: InputRules, state: Any) -> Any:
    """Record what `obj` says about the raw `columns` it reads.

    `state` is what the steps before it in a pipeline did (None for the first step): how
    they treated missing values, and whether infinity still reaches this step as it came.
    Returns the state to carry to the next step, or None when the next step no longer reads
    the raw columns.
    """
    from .registry import find_kind

    kind = find_kind(type(obj))
    if kind is None:
        return None  # unknown steps say nothing: the contract stays as the example shows
    if kind.walk is not None:
        kind.walk(obj, columns, into)
        return None
    if kind.rules is None:
        return None
    missing, infinity_raw = state or (PASSES, True)
    rules = kind.rules(obj)
    if rules.infinity_refused and infinity_raw:
        into.infinity_refused.update(columns)
    if missing != REFUSED and rules.missing == HANDLED:
        into.missing_handled.update(columns)
        missing = HANDLED
    elif missing != HANDLED and rules.missing == REFUSED:
        missing = REFUSED
    if rules.categories is not None:
        for column, values in zip(columns, rules.categories, strict=False):
            into.categories[column] = values
            if rules.closed:
                into.closed_categories[column] = values
    if not rules.keeps_columns:
        return None
    return missing, infinity_raw and rules.keeps_infinity


def select_columns(columns: list[str], selection: Any) -> list[str]:
    """Column names picked by a fitted ColumnTransformer selection."""
    if isinstance(selection, (str, int, np.integer)):
        selection = [selection]
    if isinstance(selection, slice):
        return columns[selection]
    picked = list(selection)
    if picked and isinstance(picked[0], (bool, np.bool_)):
        return [c for c, keep in zip(columns, picked, strict=False) if keep]
    return [columns[int(s)] if isinstance(s, (int, np.integer)) else str(s) for s in picked]
