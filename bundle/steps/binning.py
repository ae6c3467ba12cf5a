"""Kinds of the binning and basis-expansion steps: bins, thresholds, polynomials, splines."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.preprocessing import KBinsDiscretizer, PolynomialFeatures

from . import graph as g
from . import replay as r
from .kinds import REFUSED, Context, Kind, Node, StepRules

__all__ = ["KINDS"]

FAMILY = "binning"
FINITE_RULES = StepRules(missing=REFUSED, infinity_refused=True)
EXPANSION = "an expansion cannot be inverted from model outputs"


def _finite_rules(obj: Any) -> StepRules:
    return FINITE_RULES


# ---------------------------------------------------------------------------------------
# KBinsDiscretizer
# ---------------------------------------------------------------------------------------


class Bins(NamedTuple):
    """The inner bin edges of each feature, the bins per feature, the encoding."""

    inner: list[np.ndarray]
    n_bins: list[int]
    one_hot: bool
    dtype: Any


def _kbins_plan(obj: KBinsDiscretizer, ctx: Context) -> Bins:
    inner = [np.asarray(edges[1:-1]) for edges in obj.bin_edges_]
    return Bins(inner, [int(n) for n in obj.n_bins_], obj.encode != "ordinal", obj.dtype)


def _kbins_replay(plan: Bins, ctx: Context) -> Node:
    offsets = np.cumsum([0, *plan.n_bins])

    def run(frame: Any) -> Any:
        x = r.floats(frame) if plan.dtype is None else np.asarray(frame.full(), dtype=plan.dtype)
        r.refuse_not_finite(r.not_finite(x), ctx, "KBinsDiscretizer cannot bin it.")
        bins = np.empty(x.shape, dtype=np.intp)
        for j, edges in enumerate(plan.inner):
            bins[:, j] = np.searchsorted(edges, x[:, j], side="right")
        if plan.one_hot:
            return r.OneHot(bins + offsets[:-1], int(offsets[-1]), x.dtype)
        return r.ArrayFrame.of(bins.astype(x.dtype))

    return Node(run, int(offsets[-1]) if plan.one_hot else ctx.n_in)


def _kbins_graph(plan: Bins, ctx: Context) -> Node:
    def run(frame: Any) -> Any:
        tf = g.tf()
        x = g.floats(frame) if plan.dtype is None else frame.to(plan.dtype)
        g.refuse_not_finite(x, ctx)
        dtype = g.np_dtype(x)
        bins = []
        for j, edges in enumerate(plan.inner):
            common = np.result_type(edges.dtype, dtype)
            values = tf.cast(x[:, j], common)
            edges_tensor = g.constant(edges, common)
            bins.append(tf.searchsorted(edges_tensor, values, side="right", out_type=tf.int64))
        if plan.one_hot:
            blocks = [tf.one_hot(b, w, dtype=dtype) for b, w in zip(bins, plan.n_bins, strict=True)]
            return g.TensorFrame.of(g.stack(blocks, frame.n_rows, dtype))
        if not bins:
            return g.TensorFrame.of(g.empty(frame.n_rows, dtype))
        return g.TensorFrame.of(tf.cast(tf.stack(bins, axis=1), dtype))

    return Node(run, sum(plan.n_bins) if plan.one_hot else ctx.n_in)


# ---------------------------------------------------------------------------------------
# PolynomialFeatures
# ---------------------------------------------------------------------------------------


class Polynomial(NamedTuple):
    """scikit-learn's column bookkeeping, run once.

    Attributes:
        steps: ``(start, end, feature, out_start, out_end)``: output columns
            ``out_start:out_end`` are columns ``start:end`` times input column `feature`.
        bias: 1 with a bias column, else 0.
        n_full: the width before dropping degrees below the minimum.
        n_out: the output width.
        min_degree: the lowest degree kept.
        max_degree: the highest degree.
    """

    steps: list[tuple[int, int, int, int, int]]
    bias: int
    n_full: int
    n_out: int
    min_degree: int
    max_degree: int


def _polynomial_plan(obj: PolynomialFeatures, ctx: Context) -> Polynomial:
    n_features = ctx.n_in
    current = 1 if obj.include_bias else 0
    index = [*range(current, current + n_features), current + n_features]
    current += n_features
    steps = []
    for _ in range(2, obj._max_degree + 1):
        new_index, end = [], index[-1]
        for feature in range(n_features):
            start = index[feature]
            new_index.append(current)
            if obj.interaction_only:
                start += index[feature + 1] - index[feature]
            stop = current + end - start
            if stop <= current:
                break
            steps.append((start, end, feature, current, stop))
            current = stop
        new_index.append(current)
        index = new_index
    return Polynomial(
        steps,
        int(obj.include_bias),
        obj._n_out_full,
        obj.n_output_features_,
        obj._min_degree,
        obj._max_degree,
    )


def _polynomial_replay(plan: Polynomial, ctx: Context) -> Node:
    n_features, bias, n_full, n_out = ctx.n_in, plan.bias, plan.n_full, plan.n_out

    def expand(x: np.ndarray) -> np.ndarray:
        xp = np.empty((x.shape[0], n_full), dtype=x.dtype)
        xp[:, :bias] = 1
        if plan.max_degree == 0:
            return xp
        xp[:, bias : bias + n_features] = x
        for start, end, feature, out_start, out_end in plan.steps:
            np.multiply(xp[:, start:end], x[:, feature : feature + 1], out=xp[:, out_start:out_end])
        if plan.min_degree <= 1:
            return xp
        return np.hstack((xp[:, :bias], xp[:, n_full - n_out + bias :]))

    return Node(r.finite(expand, ctx, "PolynomialFeatures cannot multiply it."), n_out)


def _polynomial_graph(plan: Polynomial, ctx: Context) -> Node:
    n_features, bias, n_full, n_out = ctx.n_in, plan.bias, plan.n_full, plan.n_out

    def expand(x: Any) -> Any:
        tf = g.tf()
        n_rows = tf.shape(x)[0]
        blocks = [tf.ones(tf.stack([n_rows, bias]), dtype=g.np_dtype(x))]
        if plan.max_degree == 0:
            return blocks[0]
        blocks.append(x)
        width, xp = bias + n_features, None
        for start, end, feature, out_start, out_end in plan.steps:
            assert out_start == width, "polynomial plan out of order"
            if xp is None or end > int(xp.shape[1]):
                xp = tf.concat(blocks, axis=1)  # every column a degree reads exists by now
            blocks.append(xp[:, start:end] * x[:, feature : feature + 1])
            width = out_end
        xp = tf.concat(blocks, axis=1)
        if plan.min_degree <= 1:
            return xp
        return tf.concat([xp[:, :bias], xp[:, n_full - n_out + bias :]], axis=1)

    return Node(g.finite(expand, ctx), n_out)


KINDS = (
    Kind(
        KBinsDiscretizer,
        FAMILY,
        state=("bin_edges_", "n_bins_", "_encoder"),
        plan=_kbins_plan,
        replay=_kbins_replay,
        graph=_kbins_graph,
        rules=_finite_rules,
        decode="inverse_transform",
        lacks={"decode_graph": "inverse_transform of bins (bin centres) is not built"},
        exported="the fitted `bin_edges_`, `ordinal` and one-hot encodings, `dtype`",
    ),
    Kind(
        PolynomialFeatures,
        FAMILY,
        state=("_min_degree", "_max_degree", "n_output_features_", "_n_out_full"),
        plan=_polynomial_plan,
        replay=_polynomial_replay,
        graph=_polynomial_graph,
        rules=_finite_rules,
        lacks={"decode": EXPANSION, "decode_graph": EXPANSION},
        exported="`degree` (and `(min, max)`), `interaction_only`, `include_bias`, "
        "scikit-learn's column order",
    ),
)
