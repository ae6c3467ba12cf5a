"""Preprocessing and postprocessing steps: how each is saved, loaded and replayed.

Each step is stored with the first serializer that can hold it:

============  ===========================================  ====================
serializer    used for                                      loading runs code?
============  ===========================================  ====================
native        the transformers in `native.py`: JSON + .npz  no
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
