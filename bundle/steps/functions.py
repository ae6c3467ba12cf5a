"""The kind of `FunctionTransformer`: a NumPy ufunc (or a function of NumPy / SciPy's
``special``) applied to every value, and its TensorFlow counterpart."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from sklearn.preprocessing import FunctionTransformer

from . import graph as g
from . import replay as r
from .kinds import PASSES, REFUSED, Context, Kind, Node, NoForm, StepRules

__all__ = ["KINDS", "apply_ufunc", "supported_ufuncs", "ufunc_table"]

FAMILY = "functions"
INFINITE_TO_INFINITE = frozenset(
    {np.absolute, np.fabs, np.negative, np.positive, np.square, np.cbrt, np.sinh, np.arcsinh,
     np.floor, np.ceil, np.rint, np.trunc, np.deg2rad, np.radians, np.rad2deg, np.degrees}
)  # fmt: skip


class Function(NamedTuple):
    func: Any
    kw_args: dict[str, Any]
    validate: bool


def _plan(obj: FunctionTransformer, ctx: Context) -> Function:
    return Function(obj.func, dict(obj.kw_args or {}), bool(obj.validate))


def _rules(obj: FunctionTransformer) -> StepRules:
    elementwise = obj.func is None or isinstance(obj.func, np.ufunc)
    if obj.validate:  # check_array's defaults: NaN and infinity refused
        return StepRules(missing=REFUSED, infinity_refused=True, keeps_columns=elementwise)
    return StepRules(
        missing=PASSES,
        infinity_refused=False,
        keeps_columns=elementwise,
        # np.tanh(inf) is 1 and np.log1p(-inf) NaN: later refusals of infinity apply to the
        # raw column only through functions that map +-inf to +-inf.
        keeps_infinity=obj.func is None or obj.func in INFINITE_TO_INFINITE,
    )


def _replay(plan: Function, ctx: Context) -> Node:
    func, kwargs = plan.func, plan.kw_args
    if func is None:
        return Node(lambda frame: frame, ctx.n_in, ctx.numeric)
    if not isinstance(func, np.ufunc):
        raise NoForm(
            f"func={getattr(func, '__name__', func)!r} is not a ufunc: it may rely on "
            "receiving a DataFrame"
        )

    def run(frame: Any) -> Any:
        x = frame.full()
        if plan.validate:
            x = np.asarray(x, dtype=np.float64) if x.dtype.kind == "O" else x
            r.refuse_not_finite(r.not_finite(x), ctx, "FunctionTransformer(validate=True).")
        return r.ArrayFrame.of(func(x, **kwargs))

    return Node(run, ctx.n_in)


# ---------------------------------------------------------------------------------------
# NumPy ufuncs mapped to TensorFlow ops
# ---------------------------------------------------------------------------------------


FLOAT, KEEP, SAME, NO_INT = "float", "keep", "same", "no-int"
"""What NumPy does with integer input: computes in float64, keeps the integer dtype,
returns the input unchanged (floor/ceil/trunc), or integer arithmetic that is not mapped."""


@functools.cache
def ufunc_table() -> dict[Any, tuple[Callable[[Any], Any], str]]:
    """ufunc -> (TensorFlow function, what NumPy does with integer input)."""
    tf = g.tf()
    ln2, ln10 = math.log(2.0), math.log(10.0)

    def trunc(x: Any) -> Any:
        return tf.where(x < 0, tf.math.ceil(x), tf.math.floor(x))

    def cbrt(x: Any) -> Any:
        return tf.math.sign(x) * tf.math.pow(tf.math.abs(x), g.scalar(1 / 3, x))

    def scaled(k: float) -> Callable[[Any], Any]:
        return lambda x: x * g.scalar(k, x)

    table: dict[Any, tuple[Callable[[Any], Any], str]] = {
        np.log1p: (tf.math.log1p, FLOAT),
        np.expm1: (tf.math.expm1, FLOAT),
        np.log: (tf.math.log, FLOAT),
        np.log2: (lambda x: tf.math.log(x) / g.scalar(ln2, x), FLOAT),
        np.log10: (lambda x: tf.math.log(x) / g.scalar(ln10, x), FLOAT),
        np.exp: (tf.math.exp, FLOAT),
        np.exp2: (lambda x: tf.math.pow(g.scalar(2, x), x), FLOAT),
        np.sqrt: (tf.math.sqrt, FLOAT),
        np.cbrt: (cbrt, FLOAT),
        np.absolute: (tf.math.abs, KEEP),
        np.fabs: (tf.math.abs, FLOAT),
        np.square: (tf.math.square, KEEP),
        np.sign: (tf.math.sign, KEEP),
        np.negative: (tf.math.negative, KEEP),
        np.positive: (tf.identity, KEEP),
        np.reciprocal: (tf.math.reciprocal, NO_INT),
        np.tanh: (tf.math.tanh, FLOAT),
        np.sinh: (tf.math.sinh, FLOAT),
        np.cosh: (tf.math.cosh, FLOAT),
        np.sin: (tf.math.sin, FLOAT),
        np.cos: (tf.math.cos, FLOAT),
        np.tan: (tf.math.tan, FLOAT),
        np.arcsin: (tf.math.asin, FLOAT),
        np.arccos: (tf.math.acos, FLOAT),
        np.arctan: (tf.math.atan, FLOAT),
        np.arcsinh: (tf.math.asinh, FLOAT),
        np.arccosh: (tf.math.acosh, FLOAT),
        np.arctanh: (tf.math.atanh, FLOAT),
        np.floor: (tf.math.floor, SAME),
        np.ceil: (tf.math.ceil, SAME),
        np.rint: (tf.math.rint, FLOAT),
        np.trunc: (trunc, SAME),
        np.deg2rad: (scaled(math.pi / 180), FLOAT),
        np.radians: (scaled(math.pi / 180), FLOAT),
        np.rad2deg: (scaled(180 / math.pi), FLOAT),
        np.degrees: (scaled(180 / math.pi), FLOAT),
    }
    try:
        import scipy.special

        table[scipy.special.expit] = (tf.math.sigmoid, FLOAT)
    except ImportError:  # scipy comes with scikit-learn; nothing to map without it
        pass
    return table


def supported_ufuncs() -> list[str]:
    """Names of the ufuncs a FunctionTransformer may use in an exported graph."""
    return sorted({getattr(f, "__name__", str(f)) for f in ufunc_table()})


def apply_ufunc(func: Any, x: Any, where: str) -> Any:
    """``func(x)`` with TensorFlow ops, in NumPy's output dtype."""
    tf = g.tf()
    op, integers = ufunc_table()[func]
    dtype = g.np_dtype(x)
    if dtype.kind == "b":
        raise NoForm(f"{where} applies {func.__name__} to booleans (NumPy gives float16)")
    if dtype.kind in "iu":
        if integers == SAME:
            return x
        if integers == NO_INT:
            raise NoForm(f"{where} applies {func.__name__} to integers (integer arithmetic)")
        if integers == FLOAT:
            x = tf.cast(x, np.float64)  # NumPy's float64 loop for integer input
    return op(x)


def _function_problem(func: Any, kw_args: Any, label: str) -> str | None:
    if func is None:
        return None
    if kw_args:
        return f"{label} with keyword arguments {sorted(kw_args)} has no TensorFlow form"
    if func not in ufunc_table():
        name = getattr(func, "__name__", type(func).__name__)
        return f"{label}={name} has no TensorFlow form; mapped ufuncs: " + ", ".join(
            supported_ufuncs()
        )
    return None


def _graph(plan: Function, ctx: Context) -> Node:
    problem = _function_problem(plan.func, plan.kw_args, "func")
    if problem:
        raise NoForm(problem)
    if plan.func is None:
        return Node(lambda frame: frame, ctx.n_in)

    def run(frame: Any) -> Any:
        x = frame.full()
        if plan.validate:
            g.refuse_not_finite(x, ctx)
        return g.TensorFrame.of(apply_ufunc(plan.func, x, ctx.path))

    return Node(run, ctx.n_in)


def _inverse_graph(obj: FunctionTransformer, mode: str, shape: Any, where: str, build: Any):
    func = obj.inverse_func
    problem = _function_problem(func, obj.inv_kw_args, "inverse_func")
    if problem:
        build.problem(where, problem)
        return None
    if func is None:
        return lambda values: values
    return lambda values: apply_ufunc(func, values, where)


KINDS = (
    Kind(
        FunctionTransformer,
        FAMILY,
        plan=_plan,
        replay=_replay,
        graph=_graph,
        rules=_rules,
        decode="inverse_transform",
        decode_graph=_inverse_graph,
        exported="`func=None` or a NumPy ufunc with a TensorFlow op (listed below); `validate`",
    ),
)
