"""Kinds of the scalers: per-column affine maps, row normalization, quantile and power maps.

Each is elementwise per column (except `Normalizer`, per row): NaN passes through where
scikit-learn lets it (``allow-nan``), infinity is refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from . import graph as g
from . import replay as r
from .kinds import PASSES, Context, Kind, Node, StepRules

__all__ = ["KINDS"]

FAMILY = "scalers"
SCALER_RULES = StepRules(missing=PASSES, infinity_refused=True, keeps_columns=True)


def _scaler_rules(obj: Any) -> StepRules:
    return SCALER_RULES


# ---------------------------------------------------------------------------------------
# StandardScaler, RobustScaler: (x - offset) / scale
# ---------------------------------------------------------------------------------------


class Affine(NamedTuple):
    """``(x - offset) / scale``; either part may be absent (None)."""

    offset: np.ndarray | None
    scale: np.ndarray | None


def _standard_plan(obj: StandardScaler, ctx: Context) -> Affine:
    return Affine(obj.mean_ if obj.with_mean else None, obj.scale_ if obj.with_std else None)


def _robust_plan(obj: RobustScaler, ctx: Context) -> Affine:
    return Affine(
        obj.center_ if obj.with_centering else None, obj.scale_ if obj.with_scaling else None
    )


def _standard_replay(plan: Affine, ctx: Context) -> Node:
    offset, scale = plan

    def run(x: np.ndarray) -> np.ndarray:
        if offset is not None:
            x = r.inplace(np.subtract, x, offset.astype(x.dtype))
        return x if scale is None else r.inplace(np.divide, x, scale.astype(x.dtype))

    return r.elementwise(run, ctx)


def _robust_replay(plan: Affine, ctx: Context) -> Node:
    offset, scale = plan

    def run(x: np.ndarray) -> np.ndarray:
        if offset is not None:
            x = r.inplace(np.subtract, x, offset)
        return x if scale is None else r.inplace(np.divide, x, scale)

    return r.elementwise(run, ctx)


def _standard_graph(plan: Affine, ctx: Context) -> Node:
    offset, scale = plan

    def run(x: Any) -> Any:
        dtype = g.np_dtype(x)
        if offset is not None:
            x = x - g.constant(offset, dtype)
        return x if scale is None else x / g.constant(scale, dtype)

    return g.elementwise(run, ctx)


def _robust_graph(plan: Affine, ctx: Context) -> Node:
    offset, scale = plan

    def run(x: Any) -> Any:
        if offset is not None:
            x = g.inplace(lambda a, b: a - b, x, offset)
        return x if scale is None else g.inplace(lambda a, b: a / b, x, scale)

    return g.elementwise(run, ctx)


# ---------------------------------------------------------------------------------------
# MinMaxScaler, MaxAbsScaler: x * scale + offset, optionally clipped
# ---------------------------------------------------------------------------------------


class Scaled(NamedTuple):
    """``x * scale + offset`` (MinMaxScaler) or ``x / scale`` (MaxAbsScaler), then clipped
    to `bounds` when set."""

    scale: np.ndarray
    offset: np.ndarray | None
    bounds: tuple[float, float] | None


def _min_max_plan(obj: MinMaxScaler, ctx: Context) -> Scaled:
    return Scaled(obj.scale_, obj.min_, tuple(obj.feature_range) if obj.clip else None)


def _max_abs_plan(obj: MaxAbsScaler, ctx: Context) -> Scaled:
    return Scaled(obj.scale_, None, (-1, 1) if obj.clip else None)


def _min_max_replay(plan: Scaled, ctx: Context) -> Node:
    def run(x: np.ndarray) -> np.ndarray:
        x = r.inplace(np.add, r.inplace(np.multiply, x, plan.scale), plan.offset)
        return _clip(x, plan.bounds)

    return r.elementwise(run, ctx)


def _max_abs_replay(plan: Scaled, ctx: Context) -> Node:
    return r.elementwise(lambda x: _clip(r.inplace(np.divide, x, plan.scale), plan.bounds), ctx)


def _clip(x: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    if bounds is None:
        return x
    return np.clip(x, x.dtype.type(bounds[0]), x.dtype.type(bounds[1]))


def _graph_clip(x: Any, bounds: tuple[float, float] | None) -> Any:
    if bounds is None:
        return x
    dtype = g.np_dtype(x)
    return g.tf().clip_by_value(x, dtype.type(bounds[0]), dtype.type(bounds[1]))  # NaN stays


def _min_max_graph(plan: Scaled, ctx: Context) -> Node:
    def run(x: Any) -> Any:
        x = g.inplace(lambda a, b: a * b, x, plan.scale)
        return _graph_clip(g.inplace(lambda a, b: a + b, x, plan.offset), plan.bounds)

    return g.elementwise(run, ctx)


def _max_abs_graph(plan: Scaled, ctx: Context) -> Node:
    return g.elementwise(
        lambda x: _graph_clip(g.inplace(lambda a, b: a / b, x, plan.scale), plan.bounds), ctx
    )


# ---------------------------------------------------------------------------------------
# As postprocess steps: inverse_transform of a target scaler
# ---------------------------------------------------------------------------------------


def _shape_ok(obj: Any, shape: Any, where: str, build: g.GraphBuild) -> bool:
    dims = g.score_shape(shape)
    if dims is None or len(dims) != 1 or dims[0] != obj.n_features_in_:
        build.problem(
            where,
            f"inverse_transform expects {obj.n_features_in_} column(s); the model outputs "
            f"shape {tuple(shape)}",
        )
        return False
    return True


def _as_float(values: Any) -> Any:
    """check_array(dtype=FLOAT_DTYPES): float32/float64 stay, the rest becomes float64."""
    kind = g.np_dtype(values)
    return values if kind in (np.float32, np.float64) else g.tf().cast(values, np.float64)


def _standard_inverse(obj: StandardScaler, mode: str, shape: Any, where: str, build: Any):
    if not _shape_ok(obj, shape, where, build):
        return None

    def run(values: Any) -> Any:
        x = _as_float(values)
        if obj.with_std:
            x = x * g.constant(obj.scale_, g.np_dtype(x))
        if obj.with_mean:
            x = x + g.constant(obj.mean_, g.np_dtype(x))
        return x

    return run


def _min_max_inverse(obj: MinMaxScaler, mode: str, shape: Any, where: str, build: Any):
    if not _shape_ok(obj, shape, where, build):
        return None

    def run(values: Any) -> Any:
        x = g.inplace(lambda a, b: a - b, _as_float(values), obj.min_)
        return g.inplace(lambda a, b: a / b, x, obj.scale_)

    return run


def _max_abs_inverse(obj: MaxAbsScaler, mode: str, shape: Any, where: str, build: Any):
    if not _shape_ok(obj, shape, where, build):
        return None
    return lambda values: g.inplace(lambda a, b: a * b, _as_float(values), obj.scale_)


def _robust_inverse(obj: RobustScaler, mode: str, shape: Any, where: str, build: Any):
    if not _shape_ok(obj, shape, where, build):
        return None

    def run(values: Any) -> Any:
        x = _as_float(values)
        if obj.with_scaling:
            x = g.inplace(lambda a, b: a * b, x, obj.scale_)
        if obj.with_centering:
            x = g.inplace(lambda a, b: a + b, x, obj.center_)
        return x

    return run


KINDS = (
    Kind(
        StandardScaler,
        FAMILY,
        state=("n_samples_seen_", "mean_", "var_", "scale_"),
        plan=_standard_plan,
        replay=_standard_replay,
        graph=_standard_graph,
        rules=_scaler_rules,
        decode="inverse_transform",
        decode_graph=_standard_inverse,
        exported="the fitted constants, in scikit-learn's dtypes (float32 input stays float32)",
    ),
    Kind(
        MinMaxScaler,
        FAMILY,
        state=("n_samples_seen_", "scale_", "min_", "data_min_", "data_max_", "data_range_"),
        plan=_min_max_plan,
        replay=_min_max_replay,
        graph=_min_max_graph,
        rules=_scaler_rules,
        decode="inverse_transform",
        decode_graph=_min_max_inverse,
        exported="`feature_range`, `clip`",
    ),
    Kind(
        MaxAbsScaler,
        FAMILY,
        state=("n_samples_seen_", "max_abs_", "scale_"),
        plan=_max_abs_plan,
        replay=_max_abs_replay,
        graph=_max_abs_graph,
        rules=_scaler_rules,
        decode="inverse_transform",
        decode_graph=_max_abs_inverse,
        exported="`clip`",
    ),
    Kind(
        RobustScaler,
        FAMILY,
        state=("center_", "scale_"),
        plan=_robust_plan,
        replay=_robust_replay,
        graph=_robust_graph,
        rules=_scaler_rules,
        decode="inverse_transform",
        decode_graph=_robust_inverse,
        exported="`with_centering`, `with_scaling`",
    ),
)
