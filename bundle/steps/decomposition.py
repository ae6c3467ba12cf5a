"""Kinds of the linear projections: PCA and TruncatedSVD.

Both are one matrix product with the fitted components. The replay runs the very product
scikit-learn runs (``X @ components_.T``, same operands, same layout), so it is
bit-identical on the same batch; a sparse input (a text vectorizer's) stays sparse.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.decomposition import PCA, TruncatedSVD

from . import graph as g
from . import replay as r
from .kinds import REFUSED, Context, Kind, Node, StepRules

__all__ = ["KINDS"]

FAMILY = "decomposition"
PROJECTION_RULES = StepRules(missing=REFUSED, infinity_refused=True)
NO_INVERSE_GRAPH = (
    "inverse_transform of a projection is not built into the graph; Bundle.predict runs "
    "scikit-learn's own"
)


def _rules(obj: Any) -> StepRules:
    return PROJECTION_RULES


class Projection(NamedTuple):
    """``X @ components.T - offset``, then divided by `scale` (PCA's whitening).

    Attributes:
        components_t: the transposed components (a view, as scikit-learn uses them).
        offset: ``mean_ @ components_.T`` (PCA), or None.
        scale: the whitening scale, or None.
        floats: the input is converted to float32/float64 (PCA) or kept numeric (SVD).
    """

    components_t: np.ndarray
    offset: np.ndarray | None
    scale: np.ndarray | None
    floats: bool


def _pca_plan(obj: PCA, ctx: Context) -> Projection:
    components_t = obj.components_.T
    offset = np.reshape(obj.mean_, (1, -1)) @ components_t
    scale = None
    if obj.whiten:
        scale = np.sqrt(obj.explained_variance_)
        scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
    return Projection(components_t, offset, scale, True)


def _svd_plan(obj: TruncatedSVD, ctx: Context) -> Projection:
    return Projection(obj.components_.T, None, None, False)


WHY = "a projection cannot handle it."


def _replay(plan: Projection, ctx: Context) -> Node:
    def project(x: Any) -> np.ndarray:
        out = x @ plan.components_t
        if plan.offset is not None:
            out -= plan.offset
        if plan.scale is not None:
            out /= plan.scale
        return out

    dense = r.finite(project, ctx, WHY, read=r.floats if plan.floats else r.numbers)

    def run(value: Any) -> Any:
        if not isinstance(value, r.SparseRows):
            return dense(value)
        matrix = value.matrix
        if plan.floats and matrix.dtype not in r.FLOATS:
            matrix = matrix.astype(np.float64)
        r.refuse_not_finite(r.not_finite(matrix.data), ctx, WHY, j=0)
        return r.ArrayFrame.of(project(matrix))

    return Node(run, plan.components_t.shape[1], sparse=True)


def _graph(plan: Projection, ctx: Context) -> Node:
    def project(x: Any) -> Any:
        tf = g.tf()
        dtype = np.result_type(g.np_dtype(x), plan.components_t.dtype)
        components = g.constant(plan.components_t, dtype)
        if isinstance(x, g.SparseBlock):
            out = tf.sparse.sparse_dense_matmul(tf.cast(x.tensor, dtype), components)
        else:
            out = tf.linalg.matmul(tf.cast(x, dtype), components)
        if plan.offset is not None:
            out = out - g.constant(plan.offset, dtype)
        if plan.scale is not None:
            out = out / g.constant(plan.scale, dtype)
        return g.TensorFrame.of(out)

    read = g.floats if plan.floats else g.numbers_of
    dense = g.finite(project, ctx, read=read)

    def run(value: Any) -> Any:
        if not isinstance(value, g.SparseBlock):
            return dense(value)
        tf = g.tf()
        values = value.tensor.values
        ctx.build.check(
            tf.reduce_all(tf.math.is_finite(tf.cast(values, np.float64))),
            f"{ctx.path}: the input contains {g.NOT_FINITE}",
        )
        return project(value)

    return Node(run, plan.components_t.shape[1], sparse=True)


KINDS = (
    Kind(
        PCA,
        FAMILY,
        state=(
            "_fit_svd_solver",
            "components_",
            "explained_variance_",
            "explained_variance_ratio_",
            "mean_",
            "n_components_",
            "n_samples_",
            "noise_variance_",
            "singular_values_",
        ),
        plan=_pca_plan,
        replay=_replay,
        graph=_graph,
        rules=_rules,
        decode="inverse_transform",
        lacks={"decode_graph": NO_INVERSE_GRAPH},
        exported="`whiten`; float32 input computed as scikit-learn does (float64 components)",
    ),
    Kind(
        TruncatedSVD,
        FAMILY,
        state=(
            "components_",
            "explained_variance_",
            "explained_variance_ratio_",
            "singular_values_",
        ),
        plan=_svd_plan,
        replay=_replay,
        graph=_graph,
        rules=_rules,
        decode="inverse_transform",
        lacks={"decode_graph": NO_INVERSE_GRAPH},
        exported="dense and sparse input (a text vectorizer's output stays sparse)",
    ),
)
