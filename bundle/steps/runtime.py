"""The steps at prediction time: preprocess (compiled replay or ``transform``) and postprocess."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import SchemaError, StepError
from .naming import class_path

__all__ = ["Postprocessor", "Preprocessor", "postprocess_mode", "to_dense_2d"]


def postprocess_mode(obj: Any) -> str:
    """How model outputs reach the step: ``class_ids`` (argmax / 0.5 threshold) or as they are.

    A class with a kind says it (`Kind.decode`): LabelEncoder gets class ids; LabelBinarizer
    and OneHotEncoder decode score matrices themselves, and a target scaler takes the
    regressor's outputs as they are. Any other object with ``classes_`` is taken for a
    label encoder (its inverse_transform takes class ids).
    """
    from .registry import find_kind

    if not hasattr(obj, "inverse_transform"):
        raise TypeError(
            f"postprocess must be a fitted object with inverse_transform (a LabelEncoder, a "
            f"target scaler, ...); got {class_path(obj)}."
        )
    kind = find_kind(type(obj))
    mode = kind.mode(obj) if kind is not None else None
    if mode is not None:
        return mode
    return "class_ids" if hasattr(obj, "classes_") else "inverse_transform"


def _columns_of(x: Any) -> list[str]:
    return [str(column) for column in getattr(x, "columns", [])]


def to_dense_2d(x: Any) -> np.ndarray:
    """A step's output as a dense ndarray (sparse matrices and DataFrames included)."""
    if hasattr(x, "toarray"):
        x = x.toarray()
    elif hasattr(x, "to_numpy"):
        x = x.to_numpy()
    return np.asarray(x)


class Preprocessor:
    """The preprocess steps as one callable: canonical input in, dense model input out.

    When every step has a compiled vectorized replay (`replay.compile_replay`), those are
    used: they give the same numbers as scikit-learn's transform without its per-call
    overhead. Otherwise each step's own ``transform`` runs.

    Input the contract could not judge (an unseen category deep inside a pipeline) is still
    refused with the step's `SchemaError`, naming the step; any other exception inside a
    step is a `StepError`.
    """

    def __init__(self, steps: Sequence[Any], *, fast: bool = True, dtype: Any = np.float64):
        self.steps = list(steps)
        self._replays: list[Callable[[Any], Any]] | None = None
        if fast and self.steps:
            self._replays = _compile_all(self.steps, dtype)

    @property
    def is_fast(self) -> bool:
        """True when the compiled replay runs instead of the steps' ``transform``."""
        return self._replays is not None

    def __call__(self, x: Any) -> Any:
        functions = self._replays or [step.transform for step in self.steps]
        for index, (step, function) in enumerate(zip(self.steps, functions, strict=True)):
            try:
                x = function(x)
            except SchemaError as exc:
                raise SchemaError(
                    f"Preprocess step {index} ({class_path(step)}) refused the input: {exc}",
                    problems=exc.problems,
                    column=exc.column,
                ) from exc
            except Exception as exc:
                columns = _columns_of(x)
                raise StepError(
                    f"Preprocess step {index} ({class_path(step)}) failed on input that passed "
                    f"the bundle's input checks: {type(exc).__name__}: {exc}"
                    + (f"\nColumns it received: {', '.join(columns[:12])}" if columns else "")
                    + "\nThe original exception is chained below.",
                    step=f"preprocess[{index}] {class_path(step)}",
                    columns=columns,
                ) from exc
        return to_dense_2d(x) if self.steps else x


def _compile_all(steps: Sequence[Any], dtype: Any) -> list[Callable[[Any], Any]] | None:
    from .replay import compile_replay

    replays = [compile_replay(step, dtype=dtype) for step in steps]
    return None if any(replay is None for replay in replays) else replays


class Postprocessor:
    """The postprocess steps: model outputs in, user values (labels, original units) out.

    Steps apply to the model's only output, or, for a model with several outputs, each to
    the output it is for (`outputs`, one name per step): ``postprocess={"species": le,
    "weight": y_scaler}``. Outputs without a step come back as the model gave them, in the
    model's structure (a list stays a list, a dict a dict).
    """

    def __init__(
        self,
        steps: Sequence[Any],
        modes: Sequence[str],
        outputs: Sequence[str | None] | None = None,
        output_names: Callable[[], Sequence[str]] | None = None,
    ):
        self.steps = list(steps)
        self.modes = list(modes)
        self.outputs = list(outputs) if outputs is not None else [None] * len(self.steps)
        # The model's output names, in order: read when a list of outputs comes in.
        self.output_names = output_names

    @property
    def per_output(self) -> bool:
        """True when the steps are keyed by model output name."""
        return any(name is not None for name in self.outputs)

    def __call__(self, outputs: Any) -> Any:
        if not self.per_output:
            return self._chain(range(len(self.steps)), outputs)
        if isinstance(outputs, Mapping):
            return {name: self._for(str(name), value) for name, value in outputs.items()}
        names = list(self.output_names() if self.output_names is not None else [])
        if isinstance(outputs, (list, tuple)):
            return [self._for(name, value) for name, value in zip(names, outputs, strict=True)]
        return self._for(names[0] if names else self.outputs[0], outputs)

    def _for(self, name: str, values: Any) -> Any:
        """One output through the steps for it (none: as it is)."""
        chosen = [i for i, output in enumerate(self.outputs) if output == name]
        return self._chain(chosen, values, output=name) if chosen else values

    def _chain(self, indices: Any, outputs: Any, output: str | None = None) -> Any:
        indices = list(indices)
        values: Any = outputs
        if indices and len(np.asarray(outputs)) == 0:
            return _empty_like_output(self.steps[indices[-1]], np.asarray(outputs))
        for index in indices:
            step, mode = self.steps[index], self.modes[index]
            try:
                decoded = _class_ids(values) if mode == "class_ids" else values
                values = _decode_replay(step, decoded)
                if values is None:
                    values = step.inverse_transform(decoded)
            except Exception as exc:
                where = f"model output {output!r}" if output is not None else "the model's outputs"
                raise StepError(
                    f"Postprocess step {index} ({class_path(step)}) failed on {where} "
                    f"of shape {np.shape(values)}: {type(exc).__name__}: {exc}",
                    step=f"postprocess[{index}] {class_path(step)}",
                ) from exc
        return values


def _empty_like_output(step: Any, outputs: np.ndarray) -> np.ndarray:
    """What a step would return for no rows (scikit-learn refuses empty input)."""
    classes = getattr(step, "classes_", None)
    if classes is not None:  # label decoders: no labels, of the labels' dtype
        return np.asarray(classes)[:0]
    if outputs.ndim < 2:
        return np.zeros((0,), dtype=np.float64)
    width = getattr(step, "n_features_in_", None) or outputs.shape[-1]
    return np.zeros((0, width), dtype=np.float64)


def _decode_replay(step: Any, values: np.ndarray) -> np.ndarray | None:
    """The kind's NumPy decode (faster than ``inverse_transform``), or None."""
    from .registry import find_kind

    kind = find_kind(type(step))
    if kind is None or kind.decode_replay is None:
        return None
    return kind.decode_replay(step, values)


def _class_ids(scores: np.ndarray) -> np.ndarray:
    """Softmax rows -> argmax; one sigmoid column -> 1 where the score is above 0.5."""
    scores = np.asarray(scores)
    if scores.ndim >= 2 and scores.shape[-1] > 1:
        return np.argmax(scores, axis=-1)
    return (scores.reshape(len(scores)) > 0.5).astype(np.int64)
