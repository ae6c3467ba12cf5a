"""Preprocessing and postprocessing steps: how each is saved, loaded, replayed and exported.

Every supported scikit-learn class is one `Kind` (`kinds.py`) in its family module
(`scalers`, `functions`, `imputers`, `encoders`, `binning`, `compose`, `labels`, ...),
gathered by `registry.py`: its stored state, its fitted constants, its NumPy replay
(`replay.py`), its TensorFlow form (`graph.py`, the export edge's interface) and its input
rules (`rules.py`). `runtime.py` runs the steps at prediction time; `storage.py` picks the
serializer and `native.py` writes and reads the pickle-free format.

Each step is stored with the first serializer that can hold it:

============  ===========================================  ====================
serializer    used for                                      loading runs code?
============  ===========================================  ====================
native        classes with a kind: JSON + .npz                no
joblib        other objects importable from installed code  yes (trusted=True)
cloudpickle   objects using ``__main__`` or local modules   yes (trusted=True)
============  ===========================================  ====================

A container (Pipeline, ColumnTransformer, FeatureUnion) that holds one unsupported
transformer is stored whole with joblib or cloudpickle: a half-native container would
still need the pickle, so it would buy no safety.
"""

from __future__ import annotations

from .naming import class_path
from .runtime import Postprocessor, Preprocessor, postprocess_mode, to_dense_2d
from .storage import choose_serializer, load_step, save_step

__all__ = [
    "Postprocessor",
    "Preprocessor",
    "choose_serializer",
    "class_path",
    "load_step",
    "postprocess_mode",
    "save_step",
    "to_dense_2d",
]
