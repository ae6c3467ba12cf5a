"""keras-bundle: a Keras model, its fitted preprocessing and its input contract, as one artifact.

Example:
    >>> from bundle import Bundle
    >>> Bundle(model, preprocess=ct, input_example=X[:100], name="churn").save("models/churn")
    >>> Bundle.load("models/churn").predict(rows)
"""

from ._version import __version__
from .core import Bundle
from .errors import (
    BundleError,
    BundleNotFoundError,
    BundleWarning,
    EnvironmentMismatchWarning,
    ExtraColumnsWarning,
    IntegrityError,
    ManifestError,
    SchemaError,
    StepError,
    UnsafeArchiveError,
    UnsafeLoadError,
    UnsupportedFormatError,
    VersionExistsError,
)
from .locations import VersionInfo
from .manifest import FORMAT_VERSION, Manifest
from .releases import archive, list_versions, tag, verify
from .schema import InputSchema
from .verification import Check, VerifyReport

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "BundleNotFoundError",
    "BundleWarning",
    "Check",
    "EnvironmentMismatchWarning",
    "ExtraColumnsWarning",
    "InputSchema",
    "IntegrityError",
    "Manifest",
    "ManifestError",
    "SchemaError",
    "StepError",
    "UnsafeArchiveError",
    "UnsafeLoadError",
    "UnsupportedFormatError",
    "VerifyReport",
    "VersionExistsError",
    "VersionInfo",
    "__version__",
    "archive",
    "list_versions",
    "tag",
    "verify",
]
