"""JAX backend: ``jax.jit`` of the model's stateless call, with the weights as arguments.

XLA compiles for fixed shapes, so a batch is padded up to a bucket of rows: a power of two
up to `max_rows`, so that varying batch sizes (a server's dynamic batches, the last chunk
of a file) compile at most once per bucket and input dtype instead of once per size.
Larger batches run as slices of `max_rows` rows: measured on CPU, XLA's throughput falls
by half or more once a call's input exceeds a few MiB (a dense net at 16,384 rows, a conv
net at a few hundred 64x64 images), so the slice is sized to about `CALL_BYTES` of input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .inference import REDUCED_PRECISION, InferenceFunction, place_rows, to_numpy

__all__ = ["CALL_BYTES", "MAX_ROWS", "JaxInference", "bucket_rows", "max_rows_for"]

CALL_BYTES = 4 << 20
"""Model-input bytes per compiled call (in the model's dtypes) that `max_rows` aims at."""
MAX_ROWS = 16_384


def max_rows_for(inputs: list[dict[str, Any]]) -> int:
    """The largest bucket: the power of two of rows nearest below `CALL_BYTES` of input."""
    row_bytes = sum(
        math.prod(d or 1 for d in spec["shape"][1:]) * np.dtype(spec["dtype"]).itemsize
        for spec in inputs
    )
    rows = max(1, CALL_BYTES // max(row_bytes, 1))
    return min(MAX_ROWS, 1 << (rows.bit_length() - 1))


def bucket_rows(n: int, max_rows: int) -> int:
    """The padded batch size for `n` rows: the next power of two, at most `max_rows`."""
    return min(max_rows, 1 << max(n - 1, 0).bit_length())


def _pad(array: np.ndarray, rows: int) -> np.ndarray:
    if len(array) == rows:
        return array
    padded = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    padded[: len(array)] = array
    return padded


def _rows(x: Any) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


class JaxInference(InferenceFunction):
    """The forward pass as ``jax.jit(model.stateless_call)``, compiled per dtype and bucket.

    The weights are arguments, read from the model's variables on every call, so weights
    set after construction are used (nothing is baked into the compiled function). Inputs
    of a narrower dtype that converts exactly (uint8 images) are cast inside it.

    Attributes:
        max_rows: the largest bucket; bigger batches run in slices of this many rows.
        compiled: ``(input dtypes, rows)`` of every compilation so far, in order.
    """

    backend = "jax"

    def __init__(self, model: Any, inputs: list[dict[str, Any]]):
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        self.max_rows = max_rows_for(inputs)
        self.compiled: list[tuple[tuple[str, ...], int]] = []
        super().__init__(model, inputs)

    def _build(self, dtypes: tuple[str, ...]) -> Any:
        import jax

        model, inputs, multi = self.model, self.inputs, self.multi_input

        def forward(trainable: list, non_trainable: list, x: Any) -> Any:
            # Runs once per compilation, while JAX traces it.
            self.compiled.append((dtypes, _rows(x)))
            if multi:
                x = {spec["name"]: x[spec["name"]].astype(spec["dtype"]) for spec in inputs}
            else:
                x = x.astype(inputs[0]["dtype"])
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            # Reduced-precision clones compute in float16/bfloat16; callers get float32.
            return jax.tree_util.tree_map(
                lambda t: t.astype("float32") if t.dtype.name in REDUCED_PRECISION else t,
                outputs,
            )

        return jax.jit(forward)

    def _run(self, function: Any, x: Any) -> Any:
        n = _rows(x)
        if n <= self.max_rows:
            return self._call(function, x, 0, n)
        outputs: Any = None
        for start in range(0, n, self.max_rows):
            stop = min(start + self.max_rows, n)
            part = self._call(function, x, start, stop)
            outputs = place_rows(outputs, part, start, n)
        return outputs

    def _call(self, function: Any, x: Any, start: int, stop: int) -> Any:
        """Outputs for rows [start, stop) of `x`, padded to their bucket and cut back."""
        rows = stop - start
        bucket = bucket_rows(rows, self.max_rows)
        if isinstance(x, dict):
            batch: Any = {
                spec["name"]: _pad(np.asarray(x[spec["name"]])[start:stop], bucket)
                for spec in self.inputs
            }
        else:
            batch = _pad(np.asarray(x)[start:stop], bucket)
        trainable = [v.value for v in self._trainable]
        non_trainable = [v.value for v in self._non_trainable]
        result = function(trainable, non_trainable, batch)
        return to_numpy(result, lambda value: np.array(value)[:rows])
