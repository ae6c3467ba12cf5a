"""The model kinds of the backend tests: data and (backend-neutral) Keras models.

Imported by save_bundles.py and load_bundles.py, which run in child processes under one
Keras backend each. Every function is deterministic (fixed seeds), so the loading process
rebuilds exactly the test inputs the saving process predicted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("tabular", "conv", "lstm", "multi", "heads", "custom")
CLASSES = np.array(["cat", "dog"])  # the heads kind's labels
TRAIN, TEST = 160, 48


def tabular_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n).astype("float64"),
            "score": rng.normal(0, 1, n),
            "visits": rng.poisson(3, n).astype("int64"),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    logits = frame["score"].to_numpy() + (frame["plan"] == "pro").to_numpy() * 1.5
    target = np.where(logits > 1, "churn", np.where(logits > -0.5, "stay", "upgrade"))
    return frame, target


def inputs(kind: str, n: int, seed: int):
    """Raw inputs of `kind`: a DataFrame, an array, or a dict of arrays (multi)."""
    rng = np.random.default_rng(seed)
    if kind == "tabular":
        return tabular_frame(n, seed)[0]
    if kind == "conv":
        return rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    if kind == "lstm":
        return rng.normal(size=(n, 10, 4)).astype("float32")
    if kind == "multi":
        return {
            "a": rng.normal(size=(n, 5)).astype("float32"),
            "b": rng.normal(size=(n, 3)).astype("float32"),
        }
    return rng.normal(size=(n, 6)).astype("float32")  # heads, custom, native


def targets(kind: str, raw, seed: int) -> np.ndarray:
    """Class ids to train on: a function of the inputs, so the models learn something."""
    if kind == "tabular":
        return tabular_frame(len(raw), seed)[1]
    if kind == "conv":
        return (raw[..., 0].mean(axis=(1, 2)) > raw[..., 2].mean(axis=(1, 2))).astype("int64")
    if kind == "lstm":
        return (raw[:, :, 0].sum(axis=1) > 0).astype("int64")
    if kind == "multi":
        return (raw["a"][:, 0] + raw["b"][:, 0] > 0).astype("int64")
    if kind == "heads":
        return CLASSES[(raw[:, 0] > raw[:, 1]).astype("int64")]
    return (raw[:, 0] > raw[:, 1]).astype("int64")


def flat(scores) -> np.ndarray:
    """Scores as one array: a dict of outputs side by side, in name order."""
    if isinstance(scores, dict):
        return np.concatenate(
            [np.asarray(scores[name]).reshape(len(scores[name]), -1) for name in sorted(scores)],
            axis=1,
        )
    return np.asarray(scores)


def labels_of(bundle, test, scores) -> np.ndarray:
    """The bundle's labels: decoded where it has postprocess steps, else the argmax."""
    if not bundle.postprocess:
        return scores.argmax(axis=-1)
    decoded = bundle.predict(test)
    return decoded["kind"] if isinstance(decoded, dict) else decoded


def train_inputs(kind: str):
    return inputs(kind, TRAIN, seed=1)


def test_inputs(kind: str):
    return inputs(kind, TEST, seed=2)


def build(kind: str, keras, custom_layer=None, n_features: int = 0):
    """A small model of `kind` (`custom_layer`: a Layer class for custom and native)."""
    layers = keras.layers
    if kind == "tabular":
        return keras.Sequential(
            [
                keras.Input((n_features,)),
                layers.Dense(16, activation="relu"),
                layers.Dropout(0.1),
                layers.Dense(3, activation="softmax"),
            ]
        )
    if kind == "conv":
        norm = layers.Normalization(axis=-1, mean=[0.5, 0.5, 0.5], variance=[0.08, 0.08, 0.08])
        return keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                layers.Rescaling(1 / 255.0),
                norm,
                layers.Conv2D(6, 3, activation="relu"),
                layers.BatchNormalization(),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dense(2, activation="softmax"),
            ]
        )
    if kind == "lstm":
        return keras.Sequential(
            [
                keras.Input((10, 4)),
                layers.LSTM(12, return_sequences=True),
                layers.GRU(6),
                layers.Dense(2, activation="softmax"),
            ]
        )
    if kind == "multi":
        a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
        hidden = layers.Concatenate()([layers.Dense(8, activation="relu")(a), b])
        return keras.Model({"a": a, "b": b}, layers.Dense(2, activation="softmax")(hidden))
    if kind == "heads":  # two outputs, as a dict named by its keys
        x = keras.Input((6,))
        hidden = layers.Dense(8, activation="relu")(x)
        kind_head = layers.Dense(2, activation="softmax", name="kind_layer")(hidden)
        return keras.Model(x, {"kind": kind_head, "size": layers.Dense(1)(hidden)})
    return keras.Sequential(
        [keras.Input((6,)), custom_layer(name="scale"), layers.Dense(2, activation="softmax")]
    )
