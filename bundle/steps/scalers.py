"""Kinds of the scalers: per-column affine maps, row normalization, quantile and power maps.

Each is elementwise per column (except `Normalizer`, per row): NaN passes through where
scikit-learn lets it (``allow-nan``), infinity is refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from scipy.special import boxcox
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

from . import graph as g
from . import replay as r
from .kinds import PASSES, REFUSED, Context, Kind, Node, StepRules

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
# Normalizer: each row divided by its norm
# ---------------------------------------------------------------------------------------


NORMALIZER_RULES = StepRules(missing=REFUSED, infinity_refused=True)
ROWS = "a row normalization cannot be inverted: the norms are not kept"


def _normalizer_plan(obj: Normalizer, ctx: Context) -> str:
    return obj.norm


def _row_norms(x: np.ndarray, norm: str) -> np.ndarray:
    """`sklearn.preprocessing.normalize`'s norms, by the same NumPy calls (same order)."""
    if norm == "l1":
        norms = np.sum(np.abs(x), axis=1)
    elif norm == "l2":
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # row_norms
    else:
        norms = np.max(np.abs(x), axis=1)
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0  # _handle_zeros_in_scale
    return norms


def _normalizer_replay(norm: str, ctx: Context) -> Node:
    from sklearn.preprocessing import normalize

    def divide(x: np.ndarray) -> np.ndarray:
        return x / _row_norms(x, norm)[:, None]

    dense = r.finite(divide, ctx, "Normalizer cannot handle it.")

    def run(value: Any) -> Any:
        if not isinstance(value, r.SparseRows):
            return dense(value)
        r.refuse_not_finite(r.not_finite(value.matrix.data), ctx, "Normalizer", j=0)
        return r.SparseRows(normalize(value.matrix, norm=norm, copy=True))

    return Node(run, ctx.n_in, sparse=True)


def graph_row_norms(x: Any, norm: str) -> Any:
    """Row norms of a dense tensor, zeros (and near-zeros) replaced by 1."""
    tf = g.tf()
    if norm == "l1":
        norms = tf.reduce_sum(tf.abs(x), axis=1)
    elif norm == "l2":
        norms = tf.sqrt(tf.reduce_sum(x * x, axis=1))
    else:
        norms = tf.reduce_max(tf.abs(x), axis=1)
    small = 10 * np.finfo(g.np_dtype(x)).eps
    return tf.where(norms < g.scalar(small, norms), tf.ones_like(norms), norms)


def _normalizer_graph(norm: str, ctx: Context) -> Node:
    def divide(x: Any) -> Any:
        return x / graph_row_norms(x, norm)[:, None]

    dense = g.finite(divide, ctx)

    def run(value: Any) -> Any:
        if isinstance(value, g.SparseBlock):
            value = value.frame()
        return dense(value)

    return Node(run, ctx.n_in, sparse=True)


# ---------------------------------------------------------------------------------------
# QuantileTransformer: each value mapped through the fitted quantiles
# ---------------------------------------------------------------------------------------

BOUNDS_THRESHOLD = 1e-7  # sklearn.preprocessing._data.BOUNDS_THRESHOLD


class Quantiles(NamedTuple):
    """Per feature: the quantiles (increasing) and the references they map to.

    Attributes:
        quantiles: ``quantiles_`` (n_quantiles, n_features).
        references: ``references_``.
        normal: the output distribution is normal (else uniform).
    """

    quantiles: np.ndarray
    references: np.ndarray
    normal: bool


def _quantile_plan(obj: QuantileTransformer, ctx: Context) -> Quantiles:
    return Quantiles(obj.quantiles_, obj.references_, obj.output_distribution == "normal")


def _quantile_column(x: np.ndarray, quantiles: np.ndarray, plan: Quantiles) -> np.ndarray:
    """`QuantileTransformer._transform_col` (forward), step by step."""
    references = plan.references
    lower_x, upper_x = quantiles[0], quantiles[-1]
    with np.errstate(invalid="ignore"):
        if plan.normal:
            lower = x - BOUNDS_THRESHOLD < lower_x
            upper = x + BOUNDS_THRESHOLD > upper_x
        else:
            lower = x == lower_x
            upper = x == upper_x
    finite = ~np.isnan(x)
    values = x[finite]
    x[finite] = 0.5 * (
        np.interp(values, quantiles, references)
        - np.interp(-values, -quantiles[::-1], -references[::-1])
    )
    x[upper] = 1
    x[lower] = 0
    if plan.normal:
        with np.errstate(invalid="ignore"):
            x = stats.norm.ppf(x)
            clip_min = stats.norm.ppf(BOUNDS_THRESHOLD - np.spacing(1))
            clip_max = stats.norm.ppf(1 - (BOUNDS_THRESHOLD - np.spacing(1)))
            x = np.clip(x, clip_min, clip_max)
    return x


def _quantile_replay(plan: Quantiles, ctx: Context) -> Node:
    def run(frame: Any) -> Any:
        x = r.own_floats(frame)
        r.refuse_not_finite(np.isinf(x), ctx, r.INFINITY)
        for j in range(x.shape[1]):
            x[:, j] = _quantile_column(x[:, j], plan.quantiles[:, j], plan)
        return r.ArrayFrame.of(x)

    return Node(run, ctx.n_in)


def graph_interp(x: Any, xp: np.ndarray, fp: np.ndarray) -> Any:
    """``np.interp(x, xp, fp)`` (x float64, xp increasing with repeats allowed)."""
    tf = g.tf()
    xs, fs = tf.constant(xp), tf.constant(fp)
    last = len(xp) - 1
    j = tf.searchsorted(xs, x, side="right", out_type=tf.int32) - 1
    j = tf.clip_by_value(j, 0, max(last - 1, 0))
    x0, x1 = tf.gather(xs, j), tf.gather(xs, tf.minimum(j + 1, last))
    f0, f1 = tf.gather(fs, j), tf.gather(fs, tf.minimum(j + 1, last))
    slope = (f1 - f0) / (x1 - x0)
    inner = tf.where(tf.equal(x, x0), f0, slope * (x - x0) + f0)
    inner = tf.where(tf.math.is_nan(inner), f0, inner)
    out = tf.where(x <= xs[0], fs[0], tf.where(x >= xs[last], fs[last], inner))
    return tf.where(tf.math.is_nan(x), x, out)


def _quantile_graph(plan: Quantiles, ctx: Context) -> Node:
    references = plan.references
    clip = (
        float(stats.norm.ppf(BOUNDS_THRESHOLD - np.spacing(1))),
        float(stats.norm.ppf(1 - (BOUNDS_THRESHOLD - np.spacing(1)))),
    )

    def column(x: Any, quantiles: np.ndarray) -> Any:
        tf = g.tf()
        dtype = g.np_dtype(x)
        wide = tf.cast(x, np.float64)
        if plan.normal:  # x - 1e-7 in x's dtype, compared in float64 (NumPy's promotion)
            lower = tf.cast(x - g.scalar(BOUNDS_THRESHOLD, x), np.float64) < quantiles[0]
            upper = tf.cast(x + g.scalar(BOUNDS_THRESHOLD, x), np.float64) > quantiles[-1]
        else:
            lower = tf.equal(wide, quantiles[0])
            upper = tf.equal(wide, quantiles[-1])
        up = graph_interp(wide, quantiles, references)
        down = graph_interp(-wide, -quantiles[::-1].copy(), -references[::-1].copy())
        y = tf.cast(0.5 * (up - down), dtype)
        y = tf.where(upper, tf.ones_like(y), y)
        y = tf.where(lower, tf.zeros_like(y), y)
        if plan.normal:
            y = tf.cast(tf.clip_by_value(tf.math.ndtri(tf.cast(y, np.float64)), *clip), dtype)
        return y

    def run(x: Any) -> Any:
        tf = g.tf()
        columns = [column(x[:, j], plan.quantiles[:, j]) for j in range(ctx.n_in)]
        return tf.stack(columns, axis=1) if columns else x

    return g.elementwise(run, ctx)


# ---------------------------------------------------------------------------------------
# PowerTransformer: Yeo-Johnson or Box-Cox per column, then standardized
# ---------------------------------------------------------------------------------------


class Power(NamedTuple):
    """The fitted lambdas, the method and the standardization (a StandardScaler plan)."""

    lambdas: np.ndarray
    box_cox: bool
    standardize: Affine | None


def _power_plan(obj: PowerTransformer, ctx: Context) -> Power:
    scaler = _standard_plan(obj._scaler, ctx) if obj.standardize else None
    return Power(obj.lambdas_, obj.method == "box-cox", scaler)


def _power_replay(plan: Power, ctx: Context) -> Node:
    transform = boxcox if plan.box_cox else stats.yeojohnson
    scale = _standard_replay(plan.standardize, ctx).run if plan.standardize else None

    def run(frame: Any) -> Any:
        x = r.own_floats(frame)
        r.refuse_not_finite(np.isinf(x), ctx, r.INFINITY)
        if plan.box_cox:
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero(np.any(x <= 0, axis=0))
            if bad.size:
                j = int(bad[0])
                raise r.SchemaError(
                    f"Input {ctx.label(j)} has values <= 0: the Box-Cox transformation of "
                    "PowerTransformer(method='box-cox') needs strictly positive data.",
                    column=ctx.column(j),
                )
        for j, lmbda in enumerate(plan.lambdas):
            with np.errstate(invalid="ignore"):
                x[:, j] = transform(x[:, j], lmbda)
        return r.ArrayFrame.of(x) if scale is None else scale(r.ArrayFrame.of(x))

    return Node(run, ctx.n_in)


def _graph_box_cox(x: Any, lmbda: float) -> Any:
    tf = g.tf()
    if abs(lmbda) < 1e-19:
        return tf.math.log(x)
    return tf.math.expm1(lmbda * tf.math.log(x)) / lmbda


def _graph_yeo_johnson(x: Any, lmbda: float) -> Any:
    """`scipy.stats.yeojohnson(x, lmbda)` for a float64 `lmbda`: ``log1p`` in x's dtype (as
    SciPy computes it), the rest in float64."""
    tf = g.tf()
    eps = np.finfo(np.float64).eps
    positive = x >= 0
    safe_pos = tf.where(positive, x, tf.zeros_like(x))
    safe_neg = tf.where(positive, tf.zeros_like(x), x)
    dtype = g.np_dtype(x)

    def log1p(v: Any) -> Any:  # rounded to x's dtype like NumPy's, then widened
        return tf.cast(tf.cast(tf.math.log1p(tf.cast(v, np.float64)), dtype), np.float64)

    log_pos, log_neg = log1p(safe_pos), log1p(-safe_neg)
    pos = log_pos if abs(lmbda) < eps else tf.math.expm1(lmbda * log_pos) / lmbda
    two = 2 - lmbda
    neg = -tf.math.expm1(two * log_neg) / two if abs(two) > eps else -log_neg
    return tf.where(positive, pos, neg)


def _power_graph(plan: Power, ctx: Context) -> Node:
    transform = _graph_box_cox if plan.box_cox else _graph_yeo_johnson
    scale = _standard_graph(plan.standardize, ctx).run if plan.standardize else None

    def run(frame: Any) -> Any:
        tf = g.tf()
        x = g.floats(frame)
        g.refuse_infinite(x, ctx)
        dtype = g.np_dtype(x)
        if plan.box_cox:
            g.refuse(
                ctx,
                tf.logical_and(x <= 0, tf.logical_not(tf.math.is_nan(x))),
                "values <= 0, which Box-Cox refuses (it needs strictly positive data)",
            )
        wide = x if not plan.box_cox else tf.cast(x, np.float64)  # boxcox's 'dd->d' loop
        columns = [transform(wide[:, j], float(lm)) for j, lm in enumerate(plan.lambdas)]
        y = tf.cast(tf.stack(columns, axis=1), dtype) if columns else x
        return g.TensorFrame.of(y) if scale is None else scale(g.TensorFrame.of(y))

    return Node(run, ctx.n_in)


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
    Kind(
        Normalizer,
        FAMILY,
        plan=_normalizer_plan,
        replay=_normalizer_replay,
        graph=_normalizer_graph,
        rules=lambda obj: NORMALIZER_RULES,
        lacks={"decode": ROWS, "decode_graph": ROWS},
        exported="`norm` `l1`, `l2`, `max`; sparse input",
    ),
    Kind(
        QuantileTransformer,
        FAMILY,
        state=("n_quantiles_", "quantiles_", "references_"),
        plan=_quantile_plan,
        replay=_quantile_replay,
        graph=_quantile_graph,
        rules=_scaler_rules,
        decode="inverse_transform",
        lacks={"decode_graph": "its inverse_transform is not built into the graph"},
        exported="`output_distribution` `uniform`/`normal` (`tf.math.ndtri`), NumPy's "
        "`interp` rule for repeated quantiles",
    ),
    Kind(
        PowerTransformer,
        FAMILY,
        state=("lambdas_", "_scaler"),
        plan=_power_plan,
        replay=_power_replay,
        graph=_power_graph,
        rules=_scaler_rules,
        decode="inverse_transform",
        lacks={"decode_graph": "its inverse_transform is not built into the graph"},
        exported="`yeo-johnson`, `box-cox` (non-positive values fail the call), `standardize`",
    ),
)
