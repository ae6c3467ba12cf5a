"""What the fitted preprocessing says about its raw input.

The input contract needs three facts the example alone does not give: which columns an
imputer fills (NaN is fine there even if the example had none), which columns an encoder
refuses unseen categories in (``handle_unknown='error'``), and, without an example, the
feature names and count the first step was fitted on. They are read from fitted
attributes here, once, at save time, and stored in the manifest's input schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InputRules", "input_rules"]

IMPUTERS = frozenset({"SimpleImputer", "KNNImputer", "IterativeImputer", "MissingIndicator"})
ENCODERS = frozenset({"OneHotEncoder", "OrdinalEncoder"})
# Steps that work column by column and pass NaN through, so an imputer after them still
# sees the raw column.
ELEMENTWISE = frozenset(
    {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "FunctionTransformer"}
)


@dataclass
class InputRules:
    """Facts about the raw input read from the fitted steps."""

    feature_names: list[str] | None = None
    n_features: int | None = None
    missing_handled: set[str] = field(default_factory=set)
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
        _walk(first, columns, rules)
    return rules


def _walk(obj: Any, columns: list[str], rules: InputRules) -> None:
    handler = HANDLERS.get(type(obj).__name__)
    if handler is not None:
        handler(obj, columns, rules)


def _imputer(obj: Any, columns: list[str], rules: InputRules) -> None:
    missing = getattr(obj, "missing_values", np.nan)
    if missing is None or (isinstance(missing, float) and np.isnan(missing)):
        rules.missing_handled.update(columns)


def _encoder(obj: Any, columns: list[str], rules: InputRules) -> None:
    categories = getattr(obj, "categories_", None)
    if categories is None:
        return
    closed = getattr(obj, "handle_unknown", "error") == "error"
    for column, values in zip(columns, categories, strict=False):
        known = [_plain(value) for value in values]
        rules.categories[column] = known
        if closed:
            rules.closed_categories[column] = known


def _pipeline(obj: Any, columns: list[str], rules: InputRules) -> None:
    for _, step in obj.steps:
        if step in (None, "passthrough"):
            continue
        kind = type(step).__name__
        _walk(step, columns, rules)
        if kind not in IMPUTERS and kind not in ELEMENTWISE:
            break  # past an encoder or a projection, columns no longer mean raw columns


def _column_transformer(obj: Any, columns: list[str], rules: InputRules) -> None:
    for _, transformer, selection in getattr(obj, "transformers_", []):
        if isinstance(transformer, str):  # "drop" / "passthrough"
            continue
        _walk(transformer, _select(columns, selection), rules)


def _feature_union(obj: Any, columns: list[str], rules: InputRules) -> None:
    handled: set[str] | None = None
    for _, transformer in obj.transformer_list:
        if isinstance(transformer, str):
            continue
        branch = InputRules()
        _walk(transformer, columns, branch)
        handled = branch.missing_handled if handled is None else handled & branch.missing_handled
        rules.closed_categories.update(branch.closed_categories)
        rules.categories.update(branch.categories)
    rules.missing_handled.update(handled or set())


def _select(columns: list[str], selection: Any) -> list[str]:
    """Column names picked by a fitted ColumnTransformer selection."""
    if isinstance(selection, (str, int, np.integer)):
        selection = [selection]
    if isinstance(selection, slice):
        return columns[selection]
    picked = list(selection)
    if picked and isinstance(picked[0], (bool, np.bool_)):
        return [c for c, keep in zip(columns, picked, strict=False) if keep]
    return [columns[int(s)] if isinstance(s, (int, np.integer)) else str(s) for s in picked]


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a category value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


HANDLERS = {
    **{name: _imputer for name in IMPUTERS - {"MissingIndicator"}},
    **{name: _encoder for name in ENCODERS},
    "Pipeline": _pipeline,
    "ColumnTransformer": _column_transformer,
    "FeatureUnion": _feature_union,
}
