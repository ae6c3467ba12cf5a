"""The steps at prediction time: preprocess (compiled replay or ``transform``) and postprocess."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import StepError
from .naming import class_path

NOT_LABEL_DECODERS = frozenset({"LabelBinarizer", "MultiLabelBinarizer", "OneHotEncoder"})

__all__ = ["Postprocessor", "Preprocessor", "postprocess_mode", "to_dense_2d"]


def postprocess_mode(obj: Any) -> str:
    """How model outputs reach the step: ``class_ids`` (argmax / 0.5 threshold) or as they are.

    A label encoder (anything with ``classes_`` whose inverse_transform takes class ids)
    gets class ids; LabelBinarizer and OneHotEncoder decode score matrices themselves, and a
    target scaler takes the regressor's outputs as they are.
    """
    if not hasattr(obj, "inverse_transform"):
        raise TypeError(
            f"postprocess must be a fitted object with inverse_transform (a LabelEncoder, a "
            f"target scaler, ...); got {class_path(obj)}."
        )
    if hasattr(obj, "classes_") and type(obj).__name__ not in NOT_LABEL_DECODERS:
        return "class_ids"
    return "inverse_transform"


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

    When every step has a compiled vectorized replay (`fast.compile_replay`), those are used:
    they give the same numbers as scikit-learn's transform without its per-call overhead.
    Otherwise each step's own ``transform`` runs.
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
    try:
        from .fast import compile_replay
    except ImportError:
        return None
    replays = [compile_replay(step, dtype=dtype) for step in steps]
    return None if any(replay is None for replay in replays) else replays


class Postprocessor:
    """The postprocess steps: model outputs in, user values (labels, original units) out."""

    def __init__(self, steps: Sequence[Any], modes: Sequence[str]):
        self.steps = list(steps)
        self.modes = list(modes)

    def _empty(self, outputs: np.ndarray) -> np.ndarray:
        return _empty_like_output(self.steps[-1], outputs)

    def __call__(self, outputs: np.ndarray) -> Any:
        values: Any = outputs
        if self.steps and len(np.asarray(outputs)) == 0:
            return self._empty(np.asarray(outputs))
        for index, (step, mode) in enumerate(zip(self.steps, self.modes, strict=True)):
            try:
                decoded = _class_ids(values) if mode == "class_ids" else values
                values = _fast_label_lookup(step, decoded) if mode == "class_ids" else None
                if values is None:
                    values = step.inverse_transform(decoded)
            except Exception as exc:
                raise StepError(
                    f"Postprocess step {index} ({class_path(step)}) failed on the model's outputs "
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


def _fast_label_lookup(step: Any, ids: np.ndarray) -> np.ndarray | None:
    """``LabelEncoder.inverse_transform`` without its per-call validation (same result).

    It is ``classes_[ids]`` once the ids are known to be in range; that check is all we keep.
    """
    if class_path(step) != "sklearn.preprocessing.LabelEncoder":
        return None
    classes = step.classes_
    if ids.size and (ids.min() < 0 or ids.max() >= len(classes)):
        return None  # let scikit-learn raise its own error
    return classes[ids]


def _class_ids(scores: np.ndarray) -> np.ndarray:
    """Softmax rows -> argmax; one sigmoid column -> 1 where the score is above 0.5."""
    scores = np.asarray(scores)
    if scores.ndim >= 2 and scores.shape[-1] > 1:
        return np.argmax(scores, axis=-1)
    return (scores.reshape(len(scores)) > 0.5).astype(np.int64)
