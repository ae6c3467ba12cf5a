"""The exception hierarchy of keras-bundle.

Every error raised on purpose by the package derives from `BundleError`::

    BundleError
     +- SchemaError (also ValueError)   input does not match what training saw
     |   +- ImageError                  an image file cannot be read as training read it
     +- StepError                       a step failed on input that passed validation
     +- ModelError                      Keras could not save, load, describe or run the model
     |   +- BackendError                the model's code needs another Keras backend
     +- IntegrityError                  checksum, size, missing or unexpected file
     |   +- DigestMismatchError         the content is not the digest the caller pinned
     +- ManifestError                   manifest.json missing, not JSON, or off-schema
     +- UnsafeLoadError                 refused: loading would execute stored code
     |   +- UnsafeArchiveError          refused: an archive member could escape or flood dest
     +- UnsupportedFormatError          newer format version, unknown serializer or format
     +- VersionExistsError              releases are immutable
     +- BundleNotFoundError             no bundle (or no such version) at a location
     |                                  (also FileNotFoundError)
     +- SignatureError                  a signature is missing, malformed, or does not verify
     +- StorageError                    a store or location failed: download, claim, a path
     |   |                              in the way
     |   +- RegistryError               an OCI registry refused or failed a request
     +- ExportError                     the pipeline could not be exported
     +- MissingDependencyError          an optional dependency is not installed
     |                                  (also ImportError)
     +- UsageError (also ValueError)    a call or argument the operation cannot honour

    BundleWarning (UserWarning)
     +- ExtraColumnsWarning             input columns the bundle does not know, ignored
     +- EnvironmentMismatchWarning      a package's major.minor differs from the saved one
     +- CompileStateSkippedWarning      loaded without trust, without the compile-only parts
     +- VersionMismatchWarning          a directory holds the manifest of another version
     +- StorageWarning                  a version, alias or leftover that cannot be read, skipped

Exceptions carry their data as keyword-only attributes; the message is built from it,
so code can inspect ``err.missing`` while people read the sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "BackendError",
    "BundleError",
    "BundleNotFoundError",
    "BundleWarning",
    "CompileStateSkippedWarning",
    "DigestMismatchError",
    "EnvironmentMismatchWarning",
    "ExportError",
    "ExtraColumnsWarning",
    "ImageError",
    "IntegrityError",
    "ManifestError",
    "MissingDependencyError",
    "ModelError",
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
    "VersionExistsError",
    "VersionMismatchWarning",
    "bullet_list",
]

MAX_LISTED = 5


def bullet_list(items: Iterable[object], *, limit: int = MAX_LISTED) -> str:
    """Format items one per line as ``- item``, capped at `limit` with "... (N more)"."""
    items = [str(item) for item in items]
    lines = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"... ({len(items) - limit} more)")
    return "\n".join(lines)


class BundleError(Exception):
    """Base class of every error raised on purpose by keras-bundle."""


class SchemaError(BundleError, ValueError):
    """Input does not match the input contract recorded at training time.

    Attributes:
        problems: every problem found, one sentence each (the message shows them all).
        column: the column or axis the first problem is about, when there is one.
    """

    def __init__(self, message: str, *, problems: Sequence[str] = (), column: str | None = None):
        super().__init__(message)
        self.problems = list(problems) or [message]
        self.column = column


class ImageError(SchemaError):
    """An image source cannot be read as training read its images (the file is named).

    Raised for an unreadable, empty, truncated or non-image file, and for a file the
    recorded loader would not read faithfully (a 16-bit PNG where PIL clips to 8 bits).

    Attributes:
        source: the path or URL of the first such file (``"bytes[3]"`` for the 4th
            in-memory image, ``"image[3]"`` for a PIL image).
        reason: why it cannot be read, in a few words.
        failures: ``(source, reason)`` for every refused image, in input order.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        reason: str,
        failures: Sequence[tuple[str, str]] = (),
        problems: Sequence[str] = (),
    ):
        super().__init__(message, problems=problems, column=None)
        self.source = source
        self.reason = reason
        self.failures = list(failures) or [(source, reason)]


class StepError(BundleError):
    """A preprocessing or postprocessing step failed on input that passed validation.

    Attributes:
        step: the step's name, e.g. ``preprocess[0] ColumnTransformer``.
        columns: the input columns the step saw (empty for array input).
    """

    def __init__(self, message: str, *, step: str, columns: Sequence[str] = ()):
        super().__init__(message)
        self.step = step
        self.columns = list(columns)


class ModelError(BundleError):
    """Keras could not save, load, describe or run the model.

    The original Keras or backend exception is chained (``raise ... from``); the message
    names what failed and, where it is known, the layer.

    Attributes:
        layer: the name of the layer that failed, when it is known.
        missing_global: for a ``NameError``, the global name the layer's code reads.
    """

    def __init__(
        self, message: str, *, layer: str | None = None, missing_global: str | None = None
    ):
        super().__init__(message)
        self.layer = layer
        self.missing_global = missing_global


class BackendError(ModelError):
    """The model's code calls another Keras backend's library directly (``tf.*`` on JAX).

    Attributes:
        parts: the layers, activations or custom objects whose code does, described.
        needs: the backend(s) their code needs, e.g. ``["tensorflow"]``.
        running: the backend Keras runs on in this process.
    """

    def __init__(
        self, message: str, *, parts: Sequence[str] = (), needs: Sequence[str], running: str
    ):
        super().__init__(message)
        self.parts = list(parts)
        self.needs = list(needs)
        self.running = running


class IntegrityError(BundleError):
    """Files on disk do not match the manifest.

    Attributes:
        mismatched: paths whose size or sha256 differ from the manifest.
        missing: paths listed in the manifest but absent.
        unexpected: paths present but not listed in the manifest.
    """

    def __init__(
        self,
        message: str,
        *,
        mismatched: Sequence[str] = (),
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
    ):
        super().__init__(message)
        self.mismatched = list(mismatched)
        self.missing = list(missing)
        self.unexpected = list(unexpected)


class DigestMismatchError(IntegrityError):
    """The bundle's digest is not the one the caller pinned (``Bundle.load(digest=...)``).

    Attributes:
        expected: the pinned digest, ``sha256:<hex>``.
        found: the digest of the content found.
    """

    def __init__(self, message: str, *, expected: str, found: str):
        super().__init__(message)
        self.expected = expected
        self.found = found


class SignatureError(BundleError):
    """A bundle's signature is missing, malformed, or does not verify against the key.

    Raised before anything in the bundle is deserialized.

    Attributes:
        signature: the signature file that was checked.
        signer: who the signature says signed it (a key's hash or a certificate's
            subject), when it says.
        files: the files whose digests differ from the signed ones (empty when the
            signature itself does not verify).
    """

    def __init__(
        self,
        message: str,
        *,
        signature: str,
        signer: str | None = None,
        files: Sequence[str] = (),
    ):
        super().__init__(message)
        self.signature = signature
        self.signer = signer
        self.files = list(files)


class ManifestError(BundleError):
    """``manifest.json`` is missing, not JSON, or does not match the manifest schema."""


class UnsafeLoadError(BundleError):
    """Loading was refused because it would execute code stored in the bundle.

    Attributes:
        parts: ``(file, serializer, imports)`` for each part that needs ``trusted=True``.
    """

    def __init__(self, message: str, *, parts: Sequence[tuple[str, str, Sequence[str]]] = ()):
        super().__init__(message)
        self.parts = [(file, serializer, list(imports)) for file, serializer, imports in parts]


class UnsupportedFormatError(BundleError):
    """The bundle uses a format version or serializer this package does not know.

    Attributes:
        found: the format version or serializer found.
        supported: what this package supports.
    """

    def __init__(self, message: str, *, found: object = None, supported: object = None):
        super().__init__(message)
        self.found = found
        self.supported = supported


class VersionExistsError(BundleError):
    """The version already exists under the root; releases are immutable.

    Attributes:
        version: the version that exists.
        path: where it lives.
    """

    def __init__(self, message: str, *, version: str, path: str):
        super().__init__(message)
        self.version = version
        self.path = path


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle, or no such version or alias, at the given location.

    Attributes:
        location: the path or URL that was looked at.
        available: the versions found there, if any.
    """

    def __init__(self, message: str, *, location: str, available: Sequence[str] = ()):
        super().__init__(message)
        self.location = location
        self.available = list(available)


class StorageError(BundleError):
    """A store or location failed: a download, an upload, a claim, a path in the way.

    The original exception (``OSError``, an fsspec or HTTP error) is chained.
    """


class RegistryError(StorageError):
    """An OCI registry refused or failed a request: credentials, a missing repository or
    tag, an HTTP error, or a registry that cannot be reached.

    Attributes:
        registry: ``host[:port]``.
        status: the HTTP status, or None when no answer came.
    """

    def __init__(self, message: str, *, registry: str, status: int | None = None):
        super().__init__(message)
        self.registry = registry
        self.status = status


class ExportError(BundleError):
    """The bundle's pipeline could not be exported (nothing was written)."""


class MissingDependencyError(BundleError, ImportError):
    """An optional dependency needed for this operation is not installed.

    Attributes:
        package: the distribution to install, e.g. ``tensorflow-cpu``.
        extra: the keras-bundle extra that provides it, e.g. ``serve``, when there is one.
    """

    def __init__(self, message: str, *, package: str, extra: str | None = None):
        super().__init__(message)
        self.package = package
        self.extra = extra


class UsageError(BundleError, ValueError):
    """A call or argument the operation cannot honour (e.g. Spark scoring of array input)."""


class UnsafeArchiveError(UnsafeLoadError):
    """An archive was refused: extracting it could escape the destination or flood the disk.

    Raised for a member that is absolute, climbs out with ``..``, is a link or a special file,
    or is not under the archive's single top-level folder, and for an archive over its byte
    or member bounds. Nothing is left written when it is raised.

    Attributes:
        member: the offending member's name, or None when the whole archive is refused.
        reason: the refusal in a few words, e.g. ``"is an absolute path"``.
    """

    def __init__(self, message: str, *, member: str | None = None, reason: str):
        super().__init__(message)
        self.member = member
        self.reason = reason


class BundleWarning(UserWarning):
    """Base class of every warning issued by keras-bundle."""


class ExtraColumnsWarning(BundleWarning):
    """Input has columns the bundle does not know; they are ignored.

    Attributes:
        extra: the ignored column names.
    """

    def __init__(self, message: str, *, extra: Sequence[str] = ()):
        super().__init__(message)
        self.extra = list(extra)


class EnvironmentMismatchWarning(BundleWarning):
    """A package's major.minor version differs from the one the bundle was saved with.

    Attributes:
        package: the distribution name, e.g. ``scikit-learn``.
        saved: the version recorded in the bundle.
        running: the version installed now.
    """

    def __init__(self, message: str, *, package: str, saved: str, running: str):
        super().__init__(message)
        self.package = package
        self.saved = saved
        self.running = running


class CompileStateSkippedWarning(BundleWarning):
    """A bundle was loaded without trust, and without the parts only compiling needs.

    Its loss, metrics or optimizer (or their schedules) are stored as code (a pickle, or a
    reference the trust policy refuses); prediction never uses them, so the model was
    rebuilt without its compile state instead of refusing the load.
    ``Bundle.load(path, trusted=True)`` restores the compile state, to continue training.

    Attributes:
        skipped: the names of the skipped custom objects (or "compile config").
    """

    def __init__(self, message: str, *, skipped: Sequence[str] = ()):
        super().__init__(message)
        self.skipped = list(skipped)


class VersionMismatchWarning(BundleWarning):
    """A version directory passed directly holds the manifest of another version.

    A renamed copy (``cp -r models/churn/3 /srv/model``) loads; the warning says which
    version it is. Through a root, the same mismatch is refused (`IntegrityError`).

    Attributes:
        directory: the directory loaded.
        version: the version its manifest names.
    """

    def __init__(self, message: str, *, directory: str, version: str):
        super().__init__(message)
        self.directory = directory
        self.version = version


class StorageWarning(BundleWarning):
    """Something in a root could not be read and was skipped (listing goes on without it).

    Attributes:
        path: the folder, file or object that was skipped.
    """

    def __init__(self, message: str, *, path: str):
        super().__init__(message)
        self.path = path
