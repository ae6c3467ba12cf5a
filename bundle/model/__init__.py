"""The Keras model: save and load, its signature, custom objects, the compiled forward pass.

Only this package imports Keras (and through it its backend: TensorFlow, JAX or PyTorch),
always lazily. The compiled forward pass has one module per backend (`tf_backend`,
`jax_backend`, `torch_backend`), picked by `inference_function`.
"""

from __future__ import annotations

from .backend import BACKENDS, backend_name, backend_record, choose_backend
from .failures import describe_batch, missing_globals, model_failure, unresolved_globals_error
from .inference import InferenceFunction, inference_function
from .keras_io import import_keras, load_model, save_model
from .portability import backend_error, check_portable, portability_problems
from .precision import PRECISIONS, reduced_precision
from .signature import STRING, model_signature, numpy_dtype, output_structure

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "STRING",
    "InferenceFunction",
    "backend_error",
    "backend_name",
    "backend_record",
    "check_portable",
    "choose_backend",
    "describe_batch",
    "import_keras",
    "inference_function",
    "load_model",
    "missing_globals",
    "model_failure",
    "model_signature",
    "numpy_dtype",
    "output_structure",
    "portability_problems",
    "reduced_precision",
    "save_model",
    "unresolved_globals_error",
]
