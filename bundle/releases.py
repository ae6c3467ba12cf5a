"""Model releases: archive, sign, push, pull, tag, list and verify bundle versions.

These functions work on locations (local paths, fsspec URLs, ``oci://`` registries) and,
except `verify` with ``load=True``, never import TensorFlow.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import BundleError, DigestMismatchError, IntegrityError, StorageWarning, UsageError
from .format.digest import check_digest, digest_of, manifest_digest, require_digest
from .format.integrity import verify_files, verify_files_for
from .format.manifest import Manifest, parse_manifest, read_manifest
from .format.signing import SignatureInfo, sign_directory, verify_directory
from .format.verification import Check, VerifyReport, files_check
from .storage import (
    GcReport,
    VersionInfo,
    collect_leftovers,
    fetch,
    fetch_verified,
    is_archive_name,
    is_oci,
    is_url,
    oci,
    open_root,
    reclaim_leftovers,
    write_archive,
)
from .storage import local as store

__all__ = ["archive", "gc", "list_versions", "pull", "push", "sign", "tag", "verify"]


def archive(
    location: str | Path, output: str | Path, *, version: str | None = None, **storage_options: Any
) -> Path | str:
    """Write a bundle version as a reproducible ``.tar.gz`` or ``.zip`` release file.

    The same bundle always gives a byte-identical file. `output` may be an fsspec URL.
    The version's files are verified against its manifest first: a release that could
    never load is never written.

    Raises:
        IntegrityError: a file of the version is changed, truncated, missing or unlisted
            (nothing is written).

    Example:
        >>> bundle.archive("models/churn", "churn-1.0.0.tar.gz", version="1.0.0")
    """
    source = fetch(location, version, **storage_options)
    manifest = read_manifest(source)
    verify_files_for(
        source,
        manifest.files,
        label=manifest.label,
        purpose=f"Refusing to archive {manifest.label}: the release could never load.",
    )
    root_name = f"{manifest.name}-{manifest.version}"
    if not is_url(output):
        write_archive(source, Path(output), root_name=root_name)
        return Path(output)
    import fsspec

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / Path(str(output)).name
        write_archive(source, local, root_name=root_name)
        fs, path = fsspec.core.url_to_fs(str(output), **storage_options)
        fs.put_file(str(local), path)
    return str(output)


def sign(
    location: str | Path,
    *,
    key: str | Path,
    version: str | None = None,
    certificate: str | Path | None = None,
    certificate_chain: Sequence[str | Path] = (),
    password: str | None = None,
) -> Path:
    """Sign a local bundle version; write ``<version>/model.sig`` and return its path.

    The signature is the OpenSSF `model_signing` format, written by the `model_signing`
    library (``pip install 'keras-bundle[sign]'``): ``model_signing verify key`` verifies
    it, and so do ``bundle verify --public-key`` and ``Bundle.load(..., public_key=...)``.
    It signs ``manifest.json`` and every file it lists. The files are checked against the
    manifest first: a changed bundle is never signed. Archives, pushes and pulls carry the
    signature along.

    Args:
        key: a PEM elliptic-curve private key (P-256, P-384, P-521).
        certificate: a PEM signing certificate for `key`, to sign with a certificate.
        certificate_chain: the certificates between `certificate` and a root.
        password: `key`'s password, if it is encrypted.

    Raises:
        IntegrityError: the files do not match the manifest.
        UsageError: not a local version directory, or an unusable key.

    Example:
        >>> bundle.sign("models/churn/1.2.0", key="signing-key.pem")
    """
    text = str(location)
    if is_url(text) or is_archive_name(text):
        raise UsageError(
            f"Cannot sign {text}: sign a local version directory (a signature is written "
            "next to its manifest), then archive or push it; both carry the signature."
        )
    path = fetch(location, version)
    manifest = read_manifest(path)
    verify_files(path, manifest.files, label=manifest.label)
    return sign_directory(
        path,
        private_key=Path(key),
        certificate=Path(certificate) if certificate is not None else None,
        certificate_chain=[Path(c) for c in certificate_chain],
        password=password,
    )


def push(
    location: str | Path,
    target: str,
    *,
    version: str | None = None,
    progress: Callable[[str, int, bool], None] | None = None,
    **options: Any,
) -> oci.PushResult:
    """Push a bundle version to an OCI registry as one artifact, with its signature.

    `target` is ``oci://HOST[:PORT]/REPOSITORY[:TAG]`` (default tag: the bundle's version).
    Each file is its own blob, skipped when the repository has it already; the bundle
    manifest is the config (so the config digest is the bundle digest); a ``model.sig`` goes
    along as a referrer. The tag is written last: a failed push leaves no tag. `options`:
    ``username``, ``password``, ``plain_http`` (see `bundle.storage.oci`).

    Returns:
        ``PushResult(reference, digest, manifest_digest, uploaded, skipped, signed)``.

    Raises:
        IntegrityError: the files do not match the manifest (nothing is pushed).
        RegistryError: the registry refused or failed.

    Example:
        >>> bundle.push("models/churn/1.2.0", "oci://registry.example.com/models/churn")
    """
    if not is_oci(target):
        raise UsageError(
            f"{target!r} is not an OCI location: push to oci://HOST[:PORT]/REPOSITORY[:TAG]."
        )
    source = fetch(location, version)
    return oci.push(source, str(target), progress=progress, **options)


def pull(
    location: str | Path,
    root: str | Path,
    *,
    version: str | None = None,
    digest: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Copy a bundle version from any location (an ``oci://`` artifact, a URL, an archive)
    into the local root `root`, as ``<root>/<version>``, verified and with its signature.

    Raises:
        DigestMismatchError: with `digest`, the bundle is another one.
        VersionExistsError: the version exists under `root` and `overwrite` is False.

    Example:
        >>> bundle.pull("oci://registry.example.com/models/churn:1.2.0", "models/churn")
    """
    with store.staging(Path(root)) as staging:
        if is_oci(location):  # straight from the registry, checked as it streams
            if digest is not None:
                check_digest(digest)
            manifest = oci.download(str(location), staging, version, digest=digest, **options)
        else:
            source, manifest = fetch_verified(location, version, digest=digest, **options)
            for entry in source.iterdir():
                copy = shutil.copytree if entry.is_dir() else shutil.copy2
                copy(entry, staging / entry.name)
        return store.publish(
            staging, Path(root), manifest.version, finalize=_unchanged, overwrite=overwrite
        )


def _unchanged(_directory: Path, _version: str) -> None:
    """A pulled version is published as it is: its manifest names its version already."""


def tag(root: str | Path, alias: str, version: str, **storage_options: Any) -> dict[str, Any]:
    """Point `alias` at `version` under `root`; moving an alias is atomic, history kept.

    Then ``Bundle.load("root@alias")`` or ``Bundle.load(root, version=alias)`` follow it.

    Returns:
        The alias record: ``{"alias", "version", "updated", "history": [...]}``.
    """
    return open_root(root, **storage_options).write_alias(alias, version)


def list_versions(root: str | Path, **storage_options: Any) -> list[VersionInfo]:
    """The published versions under `root`, lowest first, with creation time, size, aliases
    and digest. An ``oci://host/repo`` root lists the repository's bundle tags.

    A version whose manifest cannot be read is skipped with a `StorageWarning` naming it.
    """
    if is_oci(root):
        return _tags(str(root), **storage_options)
    target = open_root(root, **storage_options)
    aliases = target.list_aliases()
    infos = []
    for version in target.list_versions():
        try:
            text = target.read_manifest_text(version)
            manifest = parse_manifest(text, source=f"{version}/manifest.json")
        except (OSError, BundleError) as exc:
            where = f"{target.location.rstrip('/')}/{version}"
            warnings.warn(
                StorageWarning(f"Skipped version {version!r} ({where}): {exc}", path=where),
                stacklevel=2,
            )
            continue
        size = sum(int(entry["size"]) for entry in manifest.files.values())
        infos.append(
            VersionInfo(
                version=version,
                created=manifest.created,
                size=size,
                aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
                location=f"{target.location.rstrip('/')}/{version}",
                digest=manifest_digest(text),
            )
        )
    return infos


def gc(
    root: str | Path,
    *,
    dry_run: bool = True,
    older_than: float | None = None,
    **storage_options: Any,
) -> GcReport:
    """Find, and with ``dry_run=False`` reclaim, what killed saves left under `root`.

    Leftovers are staging folders of saves that died, copies of replaced versions, files
    uploaded to object storage that no manifest names, superseded alias records and the
    local cache's abandoned work folders. Nothing published is touched, nor anything a
    live process is writing: local work folders are locked by their writer, and objects
    count only once untouched for `older_than` seconds (default 24 hours on object
    storage, where nothing tells a dead writer from a slow one).

    Returns:
        A `GcReport`: what was found (dry run) or reclaimed, and what was skipped and why.

    Example:
        >>> bundle.gc("models/churn")                  # what would go
        >>> bundle.gc("models/churn", dry_run=False)   # reclaim it
    """
    if is_oci(root):
        raise UsageError(
            f"{root} is an OCI registry: it collects its own garbage (unreferenced blobs).\n"
            "Run gc on a directory or object-storage root, e.g. bundle gc models/churn."
        )
    target = open_root(root, **storage_options)
    report = collect_leftovers(target, older_than=older_than)
    return report if dry_run else reclaim_leftovers(target, report)


def verify(
    location: str | Path,
    *,
    version: str | None = None,
    trusted: bool = False,
    load: bool = True,
    digest: str | None = None,
    public_key: str | Path | None = None,
    certificate_chain: Sequence[str | Path] | None = None,
    signature: str | Path | None = None,
    **storage_options: Any,
) -> VerifyReport:
    """Verify a bundle: manifest, hashes and, with `load`, every part and the golden outputs.

    With ``load=False`` only the manifest and the files are checked (no TensorFlow). With
    `digest`, the bundle digest must be that one; with `public_key` (or `certificate_chain`),
    the signature (``model.sig``, or `signature`) must verify and sign exactly these files.
    """
    try:
        path = fetch(location, version, digest=digest, **storage_options)
    except DigestMismatchError as exc:  # an OCI artifact refused before its download
        return VerifyReport(str(location), [Check("digest", False, str(exc))])
    except IntegrityError as exc:  # a download or archive that does not match, never cached
        return VerifyReport(str(location), [Check("files", False, str(exc))])
    try:
        manifest = read_manifest(path)
    except BundleError as exc:
        return VerifyReport(str(location), [Check("manifest", False, str(exc))])
    found = digest_of(path)
    checks = [
        Check("manifest", True, f"format {manifest.format_version}, schema valid, digest {found}")
    ]
    if digest is not None:
        checks.append(_digest_check(check_digest(digest), found, manifest, location))
    files = files_check(path, manifest)
    checks.append(files)
    if files.passed and (public_key is not None or certificate_chain is not None):
        checks.append(_signature_check(path, manifest, public_key, certificate_chain, signature))
    if not load or not all(check.passed for check in checks):
        return VerifyReport(manifest.label, checks)
    from .core import Bundle

    try:
        loaded = Bundle.load(path, trusted=trusted)
    except IntegrityError as exc:  # changed between the two checks
        return VerifyReport(manifest.label, [*checks, Check("load", False, str(exc))])
    except BundleError as exc:
        return VerifyReport(manifest.label, [*checks, Check("load", False, str(exc))])
    report = loaded.verify()
    # The loaded bundle re-checked the files itself; keep the first, detailed check only.
    return VerifyReport(manifest.label, [*checks, *[c for c in report.checks if c.name != "files"]])


def _tags(root: str, **options: Any) -> list[VersionInfo]:
    infos = []
    for tag_name, oci_digest, text in oci.list_tags(root, **options):
        manifest = parse_manifest(text, source=f"{root}:{tag_name}")
        infos.append(
            VersionInfo(
                version=tag_name,
                created=manifest.created,
                size=sum(int(entry["size"]) for entry in manifest.files.values()),
                aliases=(),
                location=f"{root.rstrip('/')}:{tag_name}@{oci_digest}",
                digest=manifest_digest(text),
            )
        )
    return infos


def _digest_check(expected: str, found: str, manifest: Manifest, location: Any) -> Check:
    try:
        require_digest(expected, found, label=manifest.label, where=str(location))
    except IntegrityError as exc:
        return Check("digest", False, str(exc))
    return Check("digest", True, f"{found}, as pinned")


def _signature_check(
    path: Path,
    manifest: Manifest,
    public_key: str | Path | None,
    certificate_chain: Sequence[str | Path] | None,
    signature: str | Path | None,
) -> Check:
    try:
        info: SignatureInfo = verify_directory(
            path,
            files=manifest.files,
            label=manifest.label,
            public_key=public_key,
            certificate_chain=certificate_chain,
            signature=signature,
        )
    except BundleError as exc:
        return Check("signature", False, str(exc))
    return Check(
        "signature",
        True,
        f"{info.path.name} signed by {info.signer}: the manifest and its "
        f"{len(manifest.files)} files",
    )
