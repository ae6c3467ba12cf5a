"""The MLServer baseline of benchmarks/serve_bench.py: the reference pipeline as a custom runtime.

The same fitted ColumnTransformer, Keras model and LabelEncoder that the bundle holds,
saved with joblib and Keras (``save_parts``), served the way MLServer's documentation shows
for a custom model: an `MLModel` whose ``predict`` decodes the V2 request into a DataFrame
(`PandasCodec`), transforms, calls the model (``predict_on_batch``, not ``predict``: Keras'
``predict`` sets up a data pipeline on every call) and answers the labels as a BYTES output
``predictions``. MLServer imports this module by name (``mlserver_runtime.ReferenceRuntime``)
from the model folder's parent on ``PYTHONPATH``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:  # only inside MLServer's process; the benchmark itself imports save_parts alone
    from mlserver import MLModel
    from mlserver.codecs import PandasCodec, StringCodec
    from mlserver.types import InferenceRequest, InferenceResponse
except ImportError:  # pragma: no cover
    MLModel = object  # type: ignore[assignment,misc]

PARTS = ("preprocess.joblib", "labels.joblib", "model.keras")


def save_parts(workload: Any, directory: Path) -> Path:
    """Write the workload's fitted parts where `ReferenceRuntime` loads them from."""
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(workload.preprocess, directory / "preprocess.joblib")
    joblib.dump(workload.labels, directory / "labels.joblib")
    workload.model.save(directory / "model.keras")
    return directory


class ReferenceRuntime(MLModel):  # type: ignore[misc]
    """ColumnTransformer -> Keras -> LabelEncoder behind MLServer's V2 endpoints."""

    async def load(self) -> bool:
        import joblib
        import keras

        parts = Path(self.settings.parameters.uri)
        self.preprocess = joblib.load(parts / "preprocess.joblib")
        self.labels = joblib.load(parts / "labels.joblib")
        self.model = keras.saving.load_model(parts / "model.keras")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        import numpy as np

        frame = PandasCodec.decode_request(payload)
        for name in frame.columns:  # BYTES inputs arrive as bytes; training saw text
            if frame[name].dtype == object and len(frame) and isinstance(frame[name].iat[0], bytes):
                frame[name] = [value.decode() for value in frame[name]]
        features = self.preprocess.transform(frame)
        if hasattr(features, "toarray"):
            features = features.toarray()
        scores = self.model.predict_on_batch(np.asarray(features, dtype="float32"))
        labels = self.labels.inverse_transform(np.asarray(scores).argmax(axis=1))
        return InferenceResponse(
            model_name=self.name,
            outputs=[StringCodec.encode_output("predictions", [str(v) for v in labels])],
        )
