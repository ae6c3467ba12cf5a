"""The predict engine: preprocess -> model (compiled, batched) -> postprocess.

It knows nothing of files or manifests: `Bundle` hands it the loaded parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .contract import n_rows, slice_rows
from .contract.text import STRING, text_model_input
from .errors import BundleError, SchemaError
from .model.inference import place_rows
from .model.signature import numpy_dtype
from .steps import Postprocessor, Preprocessor

_DONE = object()
# Model-input bytes per chunk: large enough to amortize each call, small enough to stay in
# cache for convolutions (measured on 64x64x3 images: 2x the throughput of 64 MiB chunks).
DEFAULT_BATCH_BYTES = 16 << 20
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 256, 16384
DEFAULT_UNKNOWN_BATCH_ROWS = 4096  # before a subclassed model's first call
TEXT_BYTES = 256  # a text input's size, for chunking

__all__ = ["Engine"]


class Engine:
    """The predict path: preprocess -> model (compiled, batched) -> postprocess."""

    def __init__(
        self,
        model: Any,
        preprocess: Sequence[Any],
        postprocess: Sequence[Any],
        modes: Sequence[str],
        model_record: Mapping[str, Any] | None = None,
        *,
        custom_objects: Mapping[str, Any] | None = None,
        postprocess_outputs: Sequence[str | None] | None = None,
    ):
        from .model import InferenceFunction, inference_function

        self.custom_objects = dict(custom_objects or {})
        self.model = model
        self.preprocess = Preprocessor(preprocess)
        self.postprocess = Postprocessor(
            postprocess, modes, postprocess_outputs, output_names=lambda: self.output_names
        )
        self._model_record = model_record
        self._function_cls = inference_function
        self._functions: dict[str, InferenceFunction] = {}
        self.precision = "float32"
        # Prepare chunk k+1 while chunk k is inferred: None = decide per call (see pipelined).
        self.overlap: bool | None = None
        self._signature: tuple[list[dict], list[dict]] | None = (
            (list(model_record["inputs"]), list(model_record["outputs"])) if model_record else None
        )

    @property
    def signature(self) -> tuple[list[dict], list[dict]]:
        if self._signature is None:
            from .model import model_signature

            self._signature = model_signature(self.model)
        return self._signature

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in the order of its outputs."""
        return [str(spec["name"]) for spec in self.signature[1]]

    def named(self, result: Any) -> Any:
        """Outputs keyed by output name (a list or dict of them); one output as it is."""
        if isinstance(result, Mapping):
            return {str(name): value for name, value in result.items()}
        if isinstance(result, (list, tuple)):
            return dict(zip(self.output_names, result, strict=True))
        return result

    def _ensure_signature(self, first_input: Any) -> None:
        if self._signature is None:
            from .model import model_signature

            try:
                self._signature = model_signature(self.model)
            except BundleError:
                self._signature = model_signature(self.model, first_input)

    def function(self, precision: str | None = None) -> Any:
        """The compiled inference function for `precision` (built on first use)."""
        precision = precision or self.precision
        if precision not in self._functions:
            from .model import reduced_precision

            model = self.model
            if precision != "float32":
                model = reduced_precision(model, precision, self.custom_objects)
            self._functions[precision] = self._function_cls(model, self.signature[0])
        return self._functions[precision]

    @property
    def takes_tensors(self) -> bool:
        """Whether a TensorFlow tensor can go to the model as it is: a TensorFlow model with
        one input and no preprocess steps (decoded images then skip two copies)."""
        function = self.function()
        return (
            function.backend == "tensorflow"
            and not self.preprocess.steps
            and (len(self.signature[0]) == 1)
        )

    def fits_model(self, tensor: Any) -> bool:
        """Whether `tensor` has exactly the model input's dtype and shape (batch axis free)."""
        if not self.takes_tensors:
            return False
        spec = self.signature[0][0]
        return tensor.dtype.name == spec["dtype"] and _fits_shape(tuple(tensor.shape), spec)

    def prepare(self, canonical_chunk: Any) -> Any:
        """Preprocess a canonical chunk into a model input of the model's dtype."""
        model_input = self.preprocess(canonical_chunk)
        self._ensure_signature(model_input)
        return self._check_model_input(model_input)

    def infer(self, model_input: Any, precision: str | None = None) -> Any:
        """The model's outputs for one prepared chunk."""
        function = self.function(precision)
        try:
            return function(model_input)
        except Exception as exc:  # the backend's errors are not for the caller to parse
            self._refuse_other_backends(exc)
            from .model import describe_batch, model_failure

            raise model_failure(self.model, exc, describe_batch(model_input)) from exc

    def _refuse_other_backends(self, exc: Exception) -> None:
        """Explain a failure caused by code that needs another backend (`BackendError`)."""
        from .model import backend_error, backend_name, portability_problems

        backend = backend_name()
        problems = portability_problems(backend=backend, model=self.model)
        if problems:
            label = f"The model {getattr(self.model, 'name', '')!r}"
            raise backend_error(problems, backend=backend, label_=label) from exc

    def run(self, canonical: Any, *, batch_size: int | None, precision: str | None = None) -> Any:
        """Scores for every row of a canonical input, computed chunk by chunk."""
        total = n_rows(canonical)
        if total == 0:
            self._ensure_signature(None)
            return self._empty_scores()
        if batch_size is None:
            batch_size = self._default_batch_size()
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of rows; got {batch_size}.")
        if total <= batch_size:  # one chunk: no slicing, no thread
            return self.infer(self.prepare(canonical), precision)
        starts = range(0, total, batch_size)
        chunks = (slice_rows(canonical, start, start + batch_size) for start in starts)
        outputs: Any = None
        results = self.pipelined(chunks, self.prepare, infer=lambda x: self.infer(x, precision))
        for start, result in zip(starts, results, strict=True):
            outputs = place_rows(outputs, result, start, total)
        return outputs

    def pipelined(
        self,
        items: Iterable[Any],
        prepare: Callable[[Any], Any],
        *,
        infer: Callable[[Any], Any] | None = None,
        overlap: bool | None = None,
    ) -> Iterator[Any]:
        """Model outputs for each item, preparing item k+1 in a thread while k is inferred.

        The backend (TensorFlow, XLA, PyTorch) releases the GIL during inference, so
        preprocessing of the next chunk runs on the other core. Measured
        (benchmarks/RESULTS.md), this pays around scikit-learn's own transform (+25% rows/s)
        and not around the compiled replay, whose chunks cost less than the hand-off on 2
        cores; so by default it overlaps only then.
        A single item runs inline.
        """
        infer = infer or self.infer
        iterator = iter(items)
        first = next(iterator, _DONE)
        if first is _DONE:
            return
        second = next(iterator, _DONE)
        if overlap is None:
            overlap = self.overlap if self.overlap is not None else not self.preprocess.is_fast
        if second is _DONE or not overlap:
            for item in (first, second):
                if item is not _DONE:
                    yield infer(prepare(item))
            for item in iterator:
                yield infer(prepare(item))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-prepare") as pool:
            pending = pool.submit(prepare, first)
            upcoming: Any = second
            while pending is not None:
                prepared = pending.result()
                pending = None
                if upcoming is not _DONE:
                    pending = pool.submit(prepare, upcoming)
                    upcoming = next(iterator, _DONE)
                yield infer(prepared)

    def _default_batch_size(self) -> int:
        if self._signature is None:
            try:
                self._ensure_signature(None)
            except BundleError:  # a subclassed model: known after its first call
                return DEFAULT_UNKNOWN_BATCH_ROWS
        inputs = self.signature[0]
        row_bytes = sum(
            math.prod(d or 1 for d in spec["shape"][1:]) * _itemsize(spec["dtype"])
            for spec in inputs
        )
        rows = DEFAULT_BATCH_BYTES // max(row_bytes, 1)
        return int(min(MAX_BATCH_ROWS, max(MIN_BATCH_ROWS, rows)))

    def _empty_scores(self) -> Any:
        outputs = self.signature[1]
        arrays = {
            spec["name"]: np.zeros(
                [0, *(d or 0 for d in spec["shape"][1:])], numpy_dtype(spec["dtype"])
            )
            for spec in outputs
        }
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        from .model import output_structure

        return arrays if output_structure(self.model) == "dict" else list(arrays.values())

    def _check_model_input(self, x: Any) -> Any:
        """Cast the preprocessed input to the model's dtype, refusing shapes it cannot take."""
        specs = self.signature[0]
        if len(specs) > 1:
            if not isinstance(x, Mapping):
                raise SchemaError(
                    f"The model has {len(specs)} inputs "
                    f"({', '.join(s['name'] for s in specs)}); pass a dict keyed by input name."
                )
            return {spec["name"]: _cast(x[spec["name"]], spec) for spec in specs}
        if isinstance(x, Mapping) and len(x) == 1:
            x = next(iter(x.values()))
        return _cast(x, specs[0])


def _itemsize(dtype: str) -> int:
    """Bytes per value of a model input; a text counts as a short sentence."""
    return TEXT_BYTES if dtype == STRING else np.dtype(dtype).itemsize


def _fits_shape(shape: tuple[int, ...], spec: Mapping[str, Any]) -> bool:
    """Whether an input of `shape` fits the model input `spec` (its batch axis is free)."""
    expected = spec["shape"]
    return len(shape) == len(expected) and all(
        e is None or e == g for e, g in zip(expected[1:], shape[1:], strict=True)
    )


def _cast(x: Any, spec: Mapping[str, Any]) -> np.ndarray:
    if spec["dtype"] == STRING:
        return text_model_input(x, spec["name"], spec["shape"])
    x = np.asarray(x)
    if not _fits_shape(x.shape, spec):
        shown = tuple(spec["shape"])
        raise SchemaError(
            f"After preprocessing, the input for model input {spec['name']!r} has shape "
            f"{x.shape}, but the model expects {shown} (None is the batch axis).\n"
            "The preprocessing produced a different number of features than the model was "
            "trained on: check that the bundle's preprocess steps are the ones used in training.",
            column=spec["name"],
        )
    dtype = np.dtype(spec["dtype"])
    if x.dtype == dtype or _converts_exactly(x.dtype, dtype):  # the graph casts these
        return x
    with np.errstate(over="ignore"):  # overflow is detected and refused just below
        cast = x.astype(dtype)
    if dtype.kind == "f" and x.dtype.kind == "f" and dtype.itemsize < x.dtype.itemsize:
        overflow = np.isinf(cast) & ~np.isinf(x)
        if overflow.any():
            raise SchemaError(
                f"After preprocessing, {int(overflow.sum())} value(s) for model input "
                f"{spec['name']!r} are outside the range of {dtype.name} "
                f"(largest magnitude {np.nanmax(np.abs(x)):.3g}).\n"
                "Check the input for extreme values.",
                column=spec["name"],
            )
    return cast


def _converts_exactly(source: np.dtype, target: np.dtype) -> bool:
    """Whether every `source` value is exactly a `target` value (bool/int into a float).

    Such inputs go to the inference function as they are: it casts them inside the graph,
    on every core, where NumPy's ``astype`` runs on one (a quarter of a small conv net's
    time on uint8 images). Float narrowing, which needs the overflow check, stays here.
    """
    return source.kind in "biu" and target.kind == "f" and np.can_cast(source, target, "safe")
