"""Kinds of the feature selectors (scikit-learn's ``SelectorMixin``).

The fitted constant is the support mask (``get_support()``), read once; the replay takes
those columns. What is stored is what rebuilds a real selector: the univariate selectors'
``scores_`` and ``pvalues_`` (with a score function of ``sklearn.feature_selection``, stored
by name), VarianceThreshold's ``variances_``, and SelectFromModel's fitted estimator, which
must itself have a kind (the linear models of `bundle.steps.linear`): SelectFromModel over
a tree ensemble, or any estimator without a kind, is refused by name and stored with
joblib.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
from sklearn.feature_selection import (
    GenericUnivariateSelect,
    SelectFdr,
    SelectFpr,
    SelectFromModel,
    SelectFwe,
    SelectKBest,
    SelectPercentile,
    VarianceThreshold,
)
from sklearn.utils import get_tags

from . import graph as g
from . import replay as r
from .kinds import PASSES, REFUSED, Context, Kind, Node, StepRules

__all__ = ["KINDS"]

FAMILY = "selection"
NO_INVERSE = "inverse_transform of a selection fills the dropped columns with zeros: not a decoder"
NOTHING_SELECTED = (
    "No features were selected: either the data is too noisy or the selection test too strict."
)


class Support(NamedTuple):
    """The selected columns, and whether the selector lets NaN and infinity through."""

    indices: np.ndarray
    allow_nan: bool


def _plan(obj: Any, ctx: Context) -> Support:
    return Support(np.flatnonzero(obj.get_support()), bool(get_tags(obj).input_tags.allow_nan))


def _rules(obj: Any) -> StepRules:
    if get_tags(obj).input_tags.allow_nan:  # no finiteness check at all
        return StepRules(missing=PASSES, infinity_refused=False)
    return StepRules(missing=REFUSED, infinity_refused=True)


WHY = "this selector, like scikit-learn, refuses NaN and infinity."


def _check(frame: Any, ctx: Context) -> None:
    """check_array(dtype=None)'s finiteness check: over every column, selected or not;
    object data (a table with text) is only checked for NaN."""
    objects = frame.dtype.kind == "O"
    for j in range(ctx.n_in):
        column = frame.column(j)
        if objects and column.dtype.kind != "O":
            column = np.asarray(r.dense(column), dtype=object)
        r.refuse_not_finite(r.per_value(r.not_finite, column), ctx, WHY, j=j)


def _replay(plan: Support, ctx: Context) -> Node:
    indices = plan.indices

    def run(value: Any) -> Any:
        if isinstance(value, r.SparseRows):
            if not plan.allow_nan:
                r.refuse_not_finite(r.not_finite(value.matrix.data), ctx, WHY, j=0)
            return r.SparseRows(value.matrix[:, indices])
        if not plan.allow_nan:
            _check(value, ctx)
        if indices.size == 0:
            warnings.warn(NOTHING_SELECTED, UserWarning, stacklevel=4)
            return r.ArrayFrame.of(np.empty((value.n_rows, 0), dtype=value.dtype))
        return value.take(indices)

    return Node(run, int(indices.size), numeric=None, sparse=True)


def _graph(plan: Support, ctx: Context) -> Node:
    indices = plan.indices

    def run(value: Any) -> Any:
        if isinstance(value, g.SparseBlock):
            value = value.frame()
        if not plan.allow_nan:
            for j, column in enumerate(value.columns()):
                if isinstance(column, g.Text):
                    g.refuse_nan_text(column, ctx, j, "which this selector refuses")
                else:
                    g.check_column(ctx, column, j, allow_nan=False)
        if indices.size == 0:
            return g.TensorFrame.of(g.empty(value.n_rows, value.dtype))
        return value.take([int(i) for i in indices])

    return Node(run, int(indices.size), numeric=None, sparse=True)


def _selector(cls: type, state: tuple[str, ...], exported: str) -> Kind:
    return Kind(
        cls,
        FAMILY,
        state=state,
        plan=_plan,
        replay=_replay,
        graph=_graph,
        rules=_rules,
        lacks={"decode": NO_INVERSE, "decode_graph": NO_INVERSE},
        exported=exported,
    )


UNIVARIATE = ("scores_", "pvalues_")
KINDS = (
    _selector(VarianceThreshold, ("variances_",), "the support mask; NaN and infinity pass"),
    *(
        _selector(cls, UNIVARIATE, "the support mask")
        for cls in (
            SelectKBest,
            SelectPercentile,
            SelectFpr,
            SelectFdr,
            SelectFwe,
            GenericUnivariateSelect,
        )
    ),
    _selector(
        SelectFromModel,
        ("estimator_", "max_features_"),
        "the support mask (the estimator must be a linear model with a kind)",
    ),
)
