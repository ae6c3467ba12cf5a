"""Kinds of the binning and basis-expansion steps: bins, thresholds, polynomials, splines."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.preprocessing import Binarizer, KBinsDiscretizer, PolynomialFeatures, SplineTransformer

from . import graph as g
from . import replay as r
from .kinds import HANDLED, REFUSED, Context, Kind, Node, StepRules, ValueCodec

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


# ---------------------------------------------------------------------------------------
# Binarizer
# ---------------------------------------------------------------------------------------


def _binarizer_plan(obj: Binarizer, ctx: Context) -> Any:
    return obj.threshold


def _binarizer_replay(threshold: Any, ctx: Context) -> Node:
    def binarize(x: np.ndarray) -> np.ndarray:
        floats = x if x.dtype.kind == "f" else x.astype(np.float64)  # its matching float dtype
        return (floats > threshold).astype(x.dtype)  # ints stay ints, like check_array's

    return Node(r.finite(binarize, ctx, "Binarizer cannot handle it.", read=r.numbers), ctx.n_in)


def _binarizer_graph(threshold: Any, ctx: Context) -> Node:
    def binarize(x: Any) -> Any:
        tf = g.tf()
        dtype = g.np_dtype(x)
        floats = x if dtype.kind == "f" else tf.cast(x, np.float64)
        common = np.result_type(g.np_dtype(floats), threshold)  # NumPy's promotion rules
        above = tf.cast(floats, common) > tf.constant(threshold, dtype=common)
        return tf.cast(above, dtype)

    return Node(g.finite(binarize, ctx, read=g.numbers_of), ctx.n_in)


# ---------------------------------------------------------------------------------------
# SplineTransformer
# ---------------------------------------------------------------------------------------


def _bspline_state(splines: list[Any]) -> list[dict[str, Any]]:
    return [
        {"t": s.t, "c": s.c, "k": int(s.k), "extrapolate": s.extrapolate, "axis": int(s.axis)}
        for s in splines
    ]


def _bsplines(state: list[dict[str, Any]]) -> list[Any]:
    from scipy.interpolate import BSpline

    return [
        BSpline.construct_fast(
            np.asarray(s["t"], dtype=np.float64),
            np.asarray(s["c"], dtype=np.float64),
            int(s["k"]),
            extrapolate=s["extrapolate"],
            axis=int(s["axis"]),
        )
        for s in state
    ]


class Splines(NamedTuple):
    """The fitted B-splines of each feature and the options that shape the output.

    Attributes:
        splines: ``bsplines_`` (scipy BSpline objects whose coefficients pick the basis).
        extrapolation: ``error``, ``constant``, ``linear``, ``continue`` or ``periodic``.
        zeros: missing values give zero rows (``handle_missing='zeros'``).
        keep: output columns kept (all, or without each feature's last spline).
        n_splines: splines per feature.
        degree: the spline degree.
        sparse: the output is sparse in scikit-learn (``sparse_output``).
    """

    splines: list[Any]
    extrapolation: str
    zeros: bool
    keep: list[int] | None
    n_splines: int
    degree: int
    sparse: bool


def _spline_plan(obj: SplineTransformer, ctx: Context) -> Splines:
    n_splines = obj.bsplines_[0].c.shape[1]
    keep = None
    if not obj.include_bias:
        width = n_splines * ctx.n_in
        keep = [j for j in range(width) if (j + 1) % n_splines != 0]
    return Splines(
        list(obj.bsplines_),
        obj.extrapolation,
        obj.handle_missing == "zeros",
        keep,
        n_splines,
        obj.degree,
        bool(obj.sparse_output),
    )


def _spline_rules(obj: SplineTransformer) -> StepRules:
    if obj.handle_missing == "zeros":  # no finiteness check at all
        return StepRules(missing=HANDLED, infinity_refused=False)
    return StepRules(missing=REFUSED, infinity_refused=True)


BEYOND = "`X` contains values beyond the limits of the knots"


def _spline_feature(
    x: np.ndarray, spl: Any, plan: Splines, out: np.ndarray, j: int, degree: int, ctx: Context
) -> int:
    """Columns ``j * n_splines ...`` of SplineTransformer.transform, as it computes them.

    Returns the degree for the next feature: scikit-learn's linear extrapolation raises its
    ``degree`` variable from 1 to 2 inside its loop over features, so every later feature
    (its knot range and extrapolated columns) sees 2. The replay does the same.
    """
    n_splines = plan.n_splines
    columns = slice(j * n_splines, (j + 1) * n_splines)
    nan_rows = np.flatnonzero(np.isnan(x))
    if plan.extrapolation in ("continue", "error", "periodic"):
        if plan.extrapolation == "periodic":
            n = spl.t.size - spl.k - 1
            if spl.t[n] - spl.t[spl.k] > 0:
                x = spl.t[spl.k] + (x - spl.t[spl.k]) % (spl.t[n] - spl.t[spl.k])
            else:
                x = np.zeros_like(x)
        if plan.sparse:
            out[:, columns] = _design_matrix(x, spl, plan, nan_rows)
        else:
            out[:, columns] = spl(x)
        if nan_rows.shape[0] > 0:
            out[nan_rows, columns] = 0
    else:
        xmin, xmax = spl.t[degree], spl.t[-degree - 1]
        f_min, f_max = spl(xmin), spl(xmax)
        inside = (xmin <= x) & (x <= xmax)
        if plan.sparse:
            from scipy.interpolate import BSpline

            clipped = x.copy()
            clipped[~inside] = xmin
            block = BSpline.design_matrix(clipped, spl.t, spl.k).toarray()
            block[~inside, :] = 0
            out[:, columns] = block
        else:
            out[inside, columns] = spl(x[inside])
    if plan.extrapolation == "error":
        if np.any(np.isnan(out[:, columns])):
            bad = int(np.flatnonzero(np.isnan(out[:, columns]).any(axis=1))[0])
            raise r.SchemaError(
                f"Input {ctx.label(j)} has values beyond the knots SplineTransformer("
                f"extrapolation='error') was fitted with (row {bad}: {x[bad]!r}). Refit with "
                "another extrapolation, or keep the input within the training range.",
                column=ctx.column(j),
            )
    elif plan.extrapolation == "constant":
        below = x < xmin
        if np.any(below):
            out[below, j * n_splines : j * n_splines + degree] = f_min[:degree]
        above = x > xmax
        if np.any(above):
            out[above, (j + 1) * n_splines - degree : (j + 1) * n_splines] = f_max[-degree:]
    elif plan.extrapolation == "linear":
        fp_min, fp_max = spl(xmin, nu=1), spl(xmax, nu=1)
        if degree <= 1:
            degree += 1
        for d in range(degree):
            below = x < xmin
            if np.any(below):
                out[below, j * n_splines + d] = f_min[d] + (x[below] - xmin) * fp_min[d]
            above = x > xmax
            if np.any(above):
                k = n_splines - 1 - d
                out[above, j * n_splines + k] = f_max[k] + (x[above] - xmax) * fp_max[k]
    return degree


def _design_matrix(x: np.ndarray, spl: Any, plan: Splines, nan_rows: np.ndarray) -> np.ndarray:
    """The sparse branch (``sparse_output=True``): `BSpline.design_matrix`, densified."""
    from scipy.interpolate import BSpline

    if nan_rows.size == x.size:
        x = np.zeros_like(x)
    elif nan_rows.shape[0] > 0:
        x = x.copy()
        x[nan_rows] = np.nanmin(x)
    block = BSpline.design_matrix(x, spl.t, spl.k, plan.splines[0].extrapolate).toarray()
    if plan.extrapolation == "periodic":
        degree = plan.degree
        block[:, :degree] += block[:, -degree:]
        block = block[:, :-degree]
    return block


def _spline_replay(plan: Splines, ctx: Context) -> Node:
    width = plan.n_splines * ctx.n_in
    n_out = width if plan.keep is None else len(plan.keep)

    def run(frame: Any) -> Any:
        x = r.floats(frame)
        if not plan.zeros:
            r.refuse_not_finite(r.not_finite(x), ctx, "SplineTransformer cannot handle it.")
        dtype = np.float64 if plan.sparse else x.dtype  # design_matrix's CSR stays float64
        out = np.zeros((x.shape[0], width), dtype=dtype)
        degree = plan.degree
        for j, spl in enumerate(plan.splines):
            degree = _spline_feature(x[:, j], spl, plan, out, j, degree, ctx)
        return r.ArrayFrame.of(out if plan.keep is None else out[:, plan.keep])

    return Node(run, n_out)


def _graph_basis(x: Any, spl: Any) -> Any:
    """``spl(x)`` for a float64 tensor `x`: de Boor's recursion on the interval of each x
    (extrapolating with the end polynomials, as ``extrapolate=True`` does)."""
    tf = g.tf()
    t, c, k = np.asarray(spl.t, np.float64), np.asarray(spl.c, np.float64), int(spl.k)
    n = t.size - k - 1
    knots = tf.constant(t)
    interval = tf.searchsorted(knots, x, side="right", out_type=tf.int32) - 1
    interval = tf.clip_by_value(interval, k, n - 1)
    h = [tf.ones_like(x)]
    for j in range(1, k + 1):
        previous = list(h)
        h = [tf.zeros_like(x)] + [None] * j
        for m in range(1, j + 1):
            xb = tf.gather(knots, interval + m)
            xa = tf.gather(knots, interval + m - j)
            same = tf.equal(xb, xa)
            w = tf.where(same, tf.zeros_like(x), previous[m - 1] / tf.where(same, 1.0, xb - xa))
            h[m - 1] = h[m - 1] + w * (xb - x)
            h[m] = w * (x - xa)
    coefficients = tf.constant(c)
    out = 0
    for a in range(k + 1):
        out = out + h[a][:, None] * tf.gather(coefficients, interval - k + a)
    return out


def _spline_graph(plan: Splines, ctx: Context) -> Node:
    n_splines = plan.n_splines
    n_out = n_splines * ctx.n_in if plan.keep is None else len(plan.keep)
    # scikit-learn's linear extrapolation turns degree 1 into 2 for every later feature.
    degrees, degree = [], plan.degree
    for _ in plan.splines:
        degrees.append(degree)
        if plan.extrapolation == "linear" and degree <= 1:
            degree += 1

    def feature(x: Any, spl: Any, j: int) -> Any:
        degree = degrees[j]
        tf = g.tf()
        missing = tf.math.is_nan(x)
        x = tf.where(missing, tf.zeros_like(x), x)
        t = np.asarray(spl.t)
        if plan.extrapolation == "periodic":
            n = t.size - spl.k - 1
            period = t[n] - t[spl.k]
            x = t[spl.k] + tf.math.floormod(x - t[spl.k], period) if period > 0 else 0 * x
        if plan.extrapolation in ("continue", "error", "periodic"):
            if plan.extrapolation == "error":
                n = t.size - spl.k - 1
                outside = tf.logical_or(x < t[spl.k], x > t[n])
                ctx.build.check(
                    tf.logical_not(tf.reduce_any(tf.logical_and(outside, ~missing))),
                    f"{ctx.path}: input column {ctx.quoted(j)} has values beyond the limits "
                    "of the knots (extrapolation='error'):",
                    tf.boolean_mask(x, outside)[: g.SAMPLE],
                )
            values = _graph_basis(x, spl)
        else:
            xmin, xmax = t[degree], t[-degree - 1]
            inside = tf.logical_and(xmin <= x, x <= xmax)
            values = tf.where(inside[:, None], _graph_basis(x, spl), 0.0)
            f_min, f_max = np.asarray(spl(xmin)), np.asarray(spl(xmax))
            below, above = x < xmin, x > xmax
            columns = tf.unstack(values, num=n_splines, axis=1)
            if plan.extrapolation == "constant":
                for d in range(degree):
                    columns[d] = tf.where(below, f_min[d], columns[d])
                    e = n_splines - degree + d
                    columns[e] = tf.where(above, f_max[e], columns[e])
            else:
                fp_min, fp_max = np.asarray(spl(xmin, nu=1)), np.asarray(spl(xmax, nu=1))
                for d in range(degree + 1 if degree <= 1 else degree):  # raised like sklearn
                    columns[d] = tf.where(below, f_min[d] + (x - xmin) * fp_min[d], columns[d])
                    e = n_splines - 1 - d
                    columns[e] = tf.where(above, f_max[e] + (x - xmax) * fp_max[e], columns[e])
            values = tf.stack(columns, axis=1)
        return tf.where(missing[:, None], tf.zeros_like(values), values)

    def run(frame: Any) -> Any:
        tf = g.tf()
        x = g.floats(frame)
        if not plan.zeros:
            g.refuse_not_finite(x, ctx)
        wide = tf.cast(x, np.float64)
        blocks = [feature(wide[:, j], spl, j) for j, spl in enumerate(plan.splines)]
        dtype = np.float64 if plan.sparse else g.np_dtype(x)  # design_matrix stays float64
        out = tf.cast(tf.concat(blocks, axis=1), dtype)
        return g.TensorFrame.of(out if plan.keep is None else tf.gather(out, plan.keep, axis=1))

    return Node(run, n_out)


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
    Kind(
        Binarizer,
        FAMILY,
        plan=_binarizer_plan,
        replay=_binarizer_replay,
        graph=_binarizer_graph,
        rules=_finite_rules,
        lacks={"decode": EXPANSION, "decode_graph": EXPANSION},
        exported="`threshold`, compared in NumPy's dtype (integer input stays integer)",
    ),
    Kind(
        SplineTransformer,
        FAMILY,
        state=("bsplines_", "n_features_out_"),
        values={"bsplines_": ValueCodec(_bspline_state, _bsplines)},
        plan=_spline_plan,
        replay=_spline_replay,
        graph=_spline_graph,
        rules=_spline_rules,
        lacks={"decode": EXPANSION, "decode_graph": EXPANSION},
        exported="de Boor's recursion on the fitted knots; every `extrapolation`, "
        "`handle_missing`, `include_bias`, `sparse_output` (densified)",
    ),
)
