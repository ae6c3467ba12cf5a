"""Kinds of the linear models that other steps hold: IterativeImputer's per-feature
regressors and SelectFromModel's estimator.

They are stored whole (every fitted attribute, so the rebuilt estimator is a real one), and
their plan is the linear prediction ``X @ coef_ + intercept_`` that IterativeImputer replays.
They are not steps of their own: a bundle's steps transform features, and a regressor's
prediction is the model's job.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
)
from sklearn.svm import LinearSVC

from .kinds import Context, Kind

__all__ = ["KINDS", "LinearPrediction", "linear_prediction"]

FAMILY = "linear"
HELD = (
    "an estimator held by IterativeImputer or SelectFromModel, replayed there; as a step of "
    "its own it would be the model"
)
LACKS = {facet: HELD for facet in ("replay", "graph", "rules", "decode", "decode_graph")}
REGRESSORS = (BayesianRidge, ARDRegression, LinearRegression, Ridge, Lasso, ElasticNet)


class LinearPrediction(NamedTuple):
    """``X @ coef + intercept``, as ``LinearModel._decision_function`` computes it."""

    coef: np.ndarray
    intercept: Any


def linear_prediction(obj: Any, ctx: Context | None = None) -> LinearPrediction:
    """The plan of a linear regressor (1-D ``coef_``)."""
    return LinearPrediction(obj.coef_, obj.intercept_)


def _kind(cls: type, state: tuple[str, ...], exported: str) -> Kind:
    return Kind(
        cls,
        FAMILY,
        state=state,
        plan=linear_prediction if cls in REGRESSORS else None,
        lacks=LACKS if cls in REGRESSORS else {"plan": HELD, **LACKS},
        exported=exported,
    )


BAYESIAN = ("X_offset_", "X_scale_", "alpha_", "coef_", "intercept_", "lambda_", "n_iter_",
            "scores_", "sigma_")  # fmt: skip
IMPUTER, SELECTOR = "inside IterativeImputer", "inside SelectFromModel"
KINDS = (
    _kind(BayesianRidge, BAYESIAN, IMPUTER + " (its default estimator)"),
    _kind(ARDRegression, BAYESIAN, IMPUTER),
    _kind(LinearRegression, ("coef_", "intercept_", "rank_", "singular_"), IMPUTER),
    _kind(Ridge, ("coef_", "intercept_", "n_iter_", "solver_"), IMPUTER),
    _kind(Lasso, ("coef_", "dual_gap_", "intercept_", "l1_ratio", "n_iter_"), IMPUTER),
    _kind(ElasticNet, ("coef_", "dual_gap_", "intercept_", "n_iter_"), IMPUTER),
    _kind(LogisticRegression, ("classes_", "coef_", "intercept_", "n_iter_"), SELECTOR),
    _kind(LinearSVC, ("classes_", "coef_", "intercept_", "n_iter_"), SELECTOR),
)
