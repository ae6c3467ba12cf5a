"""keras-bundle: a Keras model, its fitted preprocessing and its input contract, as one artifact.

Example:
    >>> from bundle import Bundle
    >>> Bundle(model, preprocess=ct, input_example=X[:100], name="churn").save("models/churn")
    >>> Bundle.load("models/churn").predict(rows)
"""

from . import export as _export  # noqa: F401  (registers Bundle.export's formats)
from ._version import __version__
from .contract import ImageInput, InputSchema
from .core import Bundle
from .drift import DriftReport, DriftThresholds
from .errors import (
    BackendError,
    BundleError,
    BundleNotFoundError,
    BundleWarning,
    CompileStateSkippedWarning,
    DigestMismatchError,
    EnvironmentMismatchWarning,
    ExportError,
    ExtraColumnsWarning,
    ImageError,
    IntegrityError,
    ManifestError,
    MissingDependencyError,
    ModelError,
    RegistryError,
    SchemaError,
    SignatureError,
    StepError,
    StorageError,
    StorageWarning,
    UnsafeArchiveError,
    UnsafeLoadError,
    UnsupportedFormatError,
    UsageError,
    VersionExistsError,
    VersionMismatchWarning,
)
from .format.manifest import FORMAT_VERSION, Manifest
from .format.verification import Check, VerifyReport
from .packing import Packed, pack
from .releases import archive, gc, list_versions, pull, push, sign, tag, verify
from .storage import GcReport, Leftover, VersionInfo

__all__ = [
    "FORMAT_VERSION",
    "BackendError",
    "Bundle",
    "BundleError",
    "BundleNotFoundError",
    "BundleWarning",
    "Check",
    "CompileStateSkippedWarning",
    "DigestMismatchError",
    "DriftReport",
    "DriftThresholds",
    "EnvironmentMismatchWarning",
    "ExportError",
    "ExtraColumnsWarning",
    "GcReport",
    "ImageError",
    "ImageInput",
    "InputSchema",
    "IntegrityError",
    "Leftover",
    "Manifest",
    "ManifestError",
    "MissingDependencyError",
    "ModelError",
    "Packed",
    "RegistryError",
    "SchemaError",
    "SignatureError",
    "StepError",
    "StorageError",
    "StorageWarning",
    "UnsafeArchiveError",
    "UnsafeLoadError",
    "UnsupportedFormatError",
    "UsageError",
    "VerifyReport",
    "VersionExistsError",
    "VersionInfo",
    "VersionMismatchWarning",
    "__version__",
    "archive",
    "gc",
    "list_versions",
    "pack",
    "pull",
    "push",
    "sign",
    "tag",
    "verify",
]
