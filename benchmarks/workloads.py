"""Reference workloads shared by the benchmarks: fixed seeds, real scikit-learn and Keras.

The reference tabular workload: 20k training rows, 8 numeric columns (one with 5% NaN) and
4 string columns with 10/20/30/40 categories, a 3-class string target;
ColumnTransformer [SimpleImputer + StandardScaler; SimpleImputer + OneHotEncoder
(handle_unknown='ignore')], a LabelEncoder postprocess, and a Dense 256-128-64-3 softmax.

Example:
    >>> from workloads import reference_tabular
    >>> workload = reference_tabular()
    >>> workload.save_bundle("/tmp/models/reference")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd

SEED = 0
N_TRAIN = 20_000
NUMERIC = [f"num_{i}" for i in range(8)]
NAN_COLUMN = "num_3"
CATEGORICAL = {"cat_a": 10, "cat_b": 20, "cat_c": 30, "cat_d": 40}
CLASSES = np.array(["bronze", "gold", "silver"])

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "TabularWorkload",
    "reference_frame",
    "reference_tabular",
    "save_mlflow_model",
]


def reference_frame(n: int, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """`n` rows of the reference tabular input and their 3-class string target."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        columns[name] = rng.normal(loc=i, scale=1 + i / 4, size=n)
    for name, n_categories in CATEGORICAL.items():
        levels = np.array([f"{name}_{j:02d}" for j in range(n_categories)])
        columns[name] = levels[rng.integers(0, n_categories, n)]
    frame = pd.DataFrame(columns)
    logits = (
        frame["num_0"].to_numpy()
        - 0.5 * frame["num_5"].to_numpy()
        + (frame["cat_a"].str[-1:].astype(int).to_numpy() % 3 - 1) * 0.8
        + rng.normal(0, 0.5, n)
    )
    target = np.where(logits > 0.6, "gold", np.where(logits > -0.8, "silver", "bronze"))
    frame.loc[rng.random(n) < 0.05, NAN_COLUMN] = np.nan
    return frame, target


@dataclass
class TabularWorkload:
    """The fitted reference pipeline and its data."""

    frame: pd.DataFrame
    target: np.ndarray
    preprocess: Any
    labels: Any
    model: Any

    def save_bundle(
        self,
        root: str | Path,
        *,
        name: str = "reference",
        version: str = "1",
        profile_data: Any = None,
    ):
        """Save the workload as a keras-bundle under `root`; return the version directory.

        The training profile comes from `profile_data` when given, else the input example.
        """
        from bundle import Bundle

        return Bundle(
            self.model,
            preprocess=self.preprocess,
            postprocess=self.labels,
            input_example=self.frame.iloc[:200],
            name=name,
            version=version,
        ).save(root, profile_data=profile_data)

    def holdout(self, n: int, seed: int = SEED + 1) -> pd.DataFrame:
        """`n` fresh rows drawn like the training rows (for scoring)."""
        return reference_frame(n, seed=seed)[0]


def reference_tabular(n: int = N_TRAIN, *, epochs: int = 2, seed: int = SEED) -> TabularWorkload:
    """Build and fit the reference tabular workload (deterministic for a given seed)."""
    import keras
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

    frame, target = reference_frame(n, seed)
    preprocess = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                list(CATEGORICAL),
            ),
        ]
    )
    features = preprocess.fit_transform(frame)
    features = features.toarray() if hasattr(features, "toarray") else features
    labels = LabelEncoder().fit(target)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((features.shape[1],)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="reference",
    )
    model.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(features, labels.transform(target), epochs=epochs, batch_size=256, verbose=0)
    return TabularWorkload(frame, target, preprocess, labels, model)


def save_mlflow_model(workload: Any, directory: Path, example: Any) -> Path:
    """The MLflow baseline: a pyfunc wrapping the workload's fitted ColumnTransformer, Keras
    model and LabelEncoder, saved for `mlflow models serve` and `mlflow.pyfunc.spark_udf`."""
    import joblib
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class ReferencePipeline(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            import joblib
            import keras

            self.preprocess = joblib.load(context.artifacts["preprocess"])
            self.labels = joblib.load(context.artifacts["labels"])
            self.model = keras.saving.load_model(context.artifacts["model"])

        def predict(self, context, model_input, params=None):
            import numpy as np

            features = self.preprocess.transform(model_input)
            if hasattr(features, "toarray"):
                features = features.toarray()
            # predict_on_batch, not predict(): Keras' predict() sets up a data pipeline on
            # every call (~100 ms), which would make this baseline a straw man.
            scores = self.model.predict_on_batch(np.asarray(features, dtype="float32"))
            return self.labels.inverse_transform(np.asarray(scores).argmax(axis=1))

    parts = directory / "parts"
    parts.mkdir(parents=True)
    joblib.dump(workload.preprocess, parts / "preprocess.joblib")
    joblib.dump(workload.labels, parts / "labels.joblib")
    workload.model.save(parts / "model.keras")
    wrapper = ReferencePipeline()
    signature = infer_signature(example, workload.labels.classes_[:1].repeat(len(example)))
    target = directory / "mlflow_model"
    mlflow.pyfunc.save_model(
        str(target),
        python_model=wrapper,
        artifacts={
            "preprocess": str(parts / "preprocess.joblib"),
            "labels": str(parts / "labels.joblib"),
            "model": str(parts / "model.keras"),
        },
        signature=signature,
        pip_requirements=[],  # no environment is built (--env-manager local)
    )
    return target
