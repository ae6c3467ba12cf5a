"""The Keras model: save and load, its signature, custom objects, the compiled forward pass.

Only this package imports Keras (and through it TensorFlow), always lazily.
"""

from __future__ import annotations

from .failures import describe_batch, missing_globals, model_failure, unresolved_globals_error
from .inference import InferenceFunction
from .keras_io import import_keras, load_model, save_model
from .precision import PRECISIONS, reduced_precision
from .signature import model_signature, output_structure

__all__ = [
    "PRECISIONS",
    "InferenceFunction",
    "describe_batch",
    "import_keras",
    "load_model",
    "missing_globals",
    "model_failure",
    "model_signature",
    "output_structure",
    "reduced_precision",
    "save_model",
    "unresolved_globals_error",
]
