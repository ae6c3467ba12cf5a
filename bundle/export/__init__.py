"""Export edge: a bundle's whole pipeline as one TensorFlow SavedModel (for TF Serving).

Importing this package registers the ``saved_model`` format with `Bundle.export`; the
public package imports it, so ``Bundle.load(path).export(out)`` always finds it.
"""

from __future__ import annotations

from ..core import register_exporter
from .saved_model import INFO_FILE, export_saved_model, require_tensorflow, signature_name

__all__ = ["INFO_FILE", "export_saved_model", "require_tensorflow", "signature_name"]

register_exporter("saved_model", export_saved_model)
