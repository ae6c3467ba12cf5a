"""Kinds of the label decoders: postprocess steps that turn model scores into labels."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.preprocessing import LabelBinarizer, LabelEncoder, MultiLabelBinarizer

from . import graph as g
from .kinds import Kind

__all__ = ["KINDS"]

FAMILY = "labels"
TARGETS = "a label decoder encodes targets, not feature columns: use it as postprocess"
NOT_FEATURES = {
    "plan": TARGETS,
    "replay": TARGETS,
    "graph": TARGETS,
    "rules": TARGETS,
}


def _classes(obj: Any, where: str, build: g.GraphBuild) -> Callable[[], Any]:
    """A function making the classes constant (text as tf.string), checked now."""
    classes = np.asarray(obj.classes_)
    if classes.dtype.kind in "OUS":
        values = classes.tolist()
        if not all(isinstance(v, str) for v in values):
            build.problem(where, "classes that are neither all text nor all numbers")
        return lambda: g.tf().constant(values, dtype=g.tf().string)
    if classes.dtype.kind not in "biuf":
        build.problem(where, f"classes of dtype {classes.dtype} have no TensorFlow form")
    return lambda: g.tf().constant(classes)


def _label_encoder_lookup(step: LabelEncoder, ids: np.ndarray) -> np.ndarray | None:
    """``LabelEncoder.inverse_transform`` without its per-call validation (same result).

    It is ``classes_[ids]`` once the ids are known to be in range; that check is all we keep.
    """
    classes = step.classes_
    if ids.size and (ids.min() < 0 or ids.max() >= len(classes)):
        return None  # let scikit-learn raise its own error
    return classes[ids]


def _label_encoder_graph(obj: LabelEncoder, mode: str, shape: Any, where: str, build: Any):
    if mode != "class_ids":
        build.problem(where, f"a LabelEncoder in mode {mode!r} (expected 'class_ids')")
        return None
    dims = g.score_shape(shape)
    n_classes = len(obj.classes_)
    if dims is None:
        build.problem(where, f"model outputs of unknown shape {tuple(shape)}")
        return None
    argmax = len(dims) >= 1 and dims[-1] > 1
    if argmax and dims[-1] > n_classes:
        build.problem(
            where, f"the model scores {dims[-1]} classes but the LabelEncoder knows {n_classes}"
        )
    if not argmax and (math.prod(dims) != 1 or n_classes < 2):
        build.problem(where, f"a 0.5 threshold on outputs {dims} with {n_classes} class(es)")

    make_classes = _classes(obj, where, build)

    def run(values: Any) -> Any:
        tf = g.tf()
        classes = make_classes()
        if argmax:
            ids = g.first_argmax(values)
        else:
            flat = tf.reshape(values, [-1])
            ids = tf.cast(flat > g.scalar(0.5, flat), tf.int64)
        return tf.gather(classes, ids)

    return run


def _label_binarizer_graph(obj: LabelBinarizer, mode: str, shape: Any, where: str, build: Any):
    dims = g.score_shape(shape)
    n_classes = len(obj.classes_)
    kind = obj.y_type_
    if obj.sparse_input_ or kind not in ("multiclass", "binary", "multilabel-indicator"):
        build.problem(where, f"a LabelBinarizer of y_type_={kind!r} (sparse={obj.sparse_input_})")
        return None
    if dims is None or len(dims) != 1:
        build.problem(where, f"model outputs of shape {tuple(shape)}: LabelBinarizer needs 2-D")
        return None
    if kind == "binary" and dims[0] > 2:
        build.problem(where, f"binary LabelBinarizer on {dims[0]} score columns")
    if kind == "multilabel-indicator" and dims[0] != n_classes:
        build.problem(where, f"{dims[0]} score columns for {n_classes} labels")
    threshold = (obj.pos_label + obj.neg_label) / 2.0
    make_classes = _classes(obj, where, build)

    def run(values: Any) -> Any:
        tf = g.tf()
        classes = make_classes()
        if kind == "multiclass":
            ids = tf.clip_by_value(g.first_argmax(values), 0, n_classes - 1)
            return tf.gather(classes, ids)
        floats = values if g.np_dtype(values).kind == "f" else tf.cast(values, np.float64)
        above = tf.cast(floats > g.scalar(threshold, floats), tf.int64)
        if kind == "multilabel-indicator":
            return above
        if dims[0] == 2:
            return tf.gather(classes, above[:, 1])
        if n_classes == 1:
            return tf.fill(tf.shape(above)[:1], classes[0])
        return tf.gather(classes, tf.reshape(above, [-1]))

    return run


KINDS = (
    Kind(
        LabelEncoder,
        FAMILY,
        state=("classes_",),
        decode="class_ids",
        decode_graph=_label_encoder_graph,
        decode_replay=_label_encoder_lookup,
        lacks=NOT_FEATURES,
        exported="argmax, or the 0.5 threshold for one sigmoid output, then the classes",
    ),
    Kind(
        LabelBinarizer,
        FAMILY,
        state=("y_type_", "sparse_input_", "classes_"),
        decode="inverse_transform",
        decode_graph=_label_binarizer_graph,
        lacks=NOT_FEATURES,
        exported="`multiclass`, `binary`, `multilabel-indicator`",
    ),
    Kind(
        MultiLabelBinarizer,
        FAMILY,
        state=("classes_", "_cached_dict"),
        decode="inverse_transform",
        lacks={
            **NOT_FEATURES,
            "decode_graph": "it returns a tuple of labels per row, which has no tensor form",
        },
    ),
)
