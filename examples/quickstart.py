"""Quickstart: train on scikit-learn's wine data, save a bundle, load it in a fresh process.

Run with `make demo`. The loading side (examples/predict_quickstart.py) runs in a separate
Python process that has none of this script's code: no scaler, no custom loss.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_wine
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler

from bundle import Bundle

HERE = Path(__file__).parent
ROOT = HERE / "_models" / "wine"


def smoothed_crossentropy(y_true, y_pred):
    """A custom loss defined in __main__: the bundle stores it by value."""
    return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=0.05)


def main() -> None:
    keras.utils.set_random_seed(0)
    data = load_wine(as_frame=True)
    X = data.frame.drop(columns="target")
    y = np.asarray(data.target_names)[data.target]  # string labels: "class_0", ...
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0)

    preprocess = ColumnTransformer(
        [("num", make_pipeline(SimpleImputer(), StandardScaler()), list(X.columns))]
    )
    labels = LabelEncoder().fit(y_train)
    model = keras.Sequential(
        [
            keras.Input((X.shape[1],)),
            keras.layers.Dense(16, "relu"),
            keras.layers.Dense(3, "softmax"),
        ]
    )
    model.compile("adam", loss=smoothed_crossentropy, metrics=["accuracy"])
    model.fit(
        preprocess.fit_transform(X_train),
        keras.utils.to_categorical(labels.transform(y_train)),
        epochs=60,
        verbose=0,
    )

    bundle = Bundle(
        model,
        preprocess=preprocess,
        postprocess=labels,
        input_example=X_train[:100],
        name="wine",
        metadata={"dataset": "sklearn wine"},
    )
    path = bundle.save(ROOT)
    print(f"saved {path}")
    print(bundle.input_schema)

    expected = model.predict(preprocess.transform(X_test), verbose=0)
    X_test.to_csv(HERE / "_models" / "wine_test.csv", index=False)
    np.save(HERE / "_models" / "wine_expected.npy", expected)

    # A separate process: none of this script's code, only the bundle.
    subprocess.run([sys.executable, str(HERE / "predict_quickstart.py"), str(ROOT)], check=True)


if __name__ == "__main__":
    main()
