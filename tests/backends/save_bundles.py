"""Train and save one bundle per model kind under the running Keras backend.

Usage: python save_bundles.py ROOT. Writes ROOT/<kind>/1/ for every kind, plus ``native``
(a layer calling the backend's own library directly), and ROOT/expected.npz with what this
process predicted (the bundle's scores and labels, and Keras' own ``model.predict``).
The layers are defined here, in ``__main__``, as in a training script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
from models import KINDS, build, flat, labels_of, targets, test_inputs, train_inputs
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

from bundle import Bundle

BACKEND = keras.backend.backend()


class Scale(keras.layers.Layer):
    """A custom layer from __main__, written with keras.ops: it runs on every backend."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return keras.ops.tanh(x * self.w) + keras.ops.mean(x, axis=-1, keepdims=True)


if BACKEND == "tensorflow":
    import tensorflow as tf

    class Native(keras.layers.Layer):
        """Calls TensorFlow directly: it runs on the TensorFlow backend only."""

        def call(self, x):
            return tf.math.tanh(x) * 2.0

elif BACKEND == "jax":
    import jax.numpy as jnp

    class Native(keras.layers.Layer):
        """Calls jax.numpy directly: it runs on the JAX backend only."""

        def call(self, x):
            return jnp.tanh(x) * 2.0

else:
    import torch

    class Native(keras.layers.Layer):
        """Calls torch directly: it runs on the PyTorch backend only."""

        def call(self, x):
            return torch.tanh(x) * 2.0


def save(kind: str, root: Path) -> dict[str, np.ndarray]:
    keras.utils.set_random_seed(0)
    raw = train_inputs(kind)
    preprocess = postprocess = None
    y = targets(kind, raw, seed=1)
    features = raw
    if kind == "tabular":
        preprocess = ColumnTransformer(
            [
                ("num", StandardScaler(), ["age", "score", "visits"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ],
            sparse_threshold=0,
        ).fit(raw)
        postprocess = LabelEncoder().fit(y)
        features = preprocess.transform(raw).astype("float32")
        y = postprocess.transform(y)
    if kind == "heads":  # a label encoder on one output, the other as the model gives it
        postprocess = {"kind": LabelEncoder().fit(y)}
        y = {"kind": postprocess["kind"].transform(y), "size": raw[:, :1] - raw[:, 1:2]}
    model = build(
        "custom" if kind == "native" else kind,
        keras,
        custom_layer=Native if kind == "native" else Scale,
        n_features=features.shape[1] if kind == "tabular" else 0,
    )
    loss = "sparse_categorical_crossentropy"
    model.compile("adam", {"kind": loss, "size": "mse"} if kind == "heads" else loss)
    model.fit(features, y, epochs=2, batch_size=32, verbose=0)
    bundle = Bundle(
        model,
        preprocess=preprocess,
        postprocess=postprocess,
        input_example=raw,
        name=kind,
        version="1",
    )
    bundle.save(root / kind)
    test = test_inputs(kind)
    scores = flat(bundle.predict(test, postprocess=False))
    labels = labels_of(bundle, test, scores)
    model_input = preprocess.transform(test).astype("float32") if preprocess else test
    if kind == "conv":
        model_input = test.astype("float32")
    return {
        f"{kind}/scores": scores,
        f"{kind}/labels": np.asarray(labels).astype(str),
        f"{kind}/keras": flat(model.predict(model_input, verbose=0)),
    }


def main() -> None:
    root = Path(sys.argv[1])
    expected: dict[str, np.ndarray] = {}
    for kind in (*KINDS, "native"):
        expected.update(save(kind, root))
    np.savez(root / "expected.npz", **expected)
    info = {"backend": BACKEND, "tensorflow_imported": "tensorflow" in sys.modules}
    (root / "saved.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
