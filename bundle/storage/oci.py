"""OCI registries as a bundle location: ``oci://HOST[:PORT]/REPO[:TAG][@sha256:...]``.

A bundle version is one OCI artifact (image manifest), pushed and pulled with the OCI
distribution protocol over HTTP (httpx, the ``oci`` extra):

- every file of the version is its own blob and layer, uncompressed, named by the
  ``org.opencontainers.image.title`` and ModelPack ``org.cncf.model.filepath`` annotations,
  with the CNCF ModelPack raw media types (weights, weight configuration, code, docs,
  datasets): an unchanged file is never uploaded twice into a repository, and ORAS or any
  OCI client pulls the files as they are on disk (``manifest.json`` included);
- the config blob is the bundle manifest in its canonical form, so the config's digest *is*
  the bundle digest (`bundle.format.digest`);
- a signature (``model.sig``) travels as an OCI 1.1 referrer of the artifact (artifact type
  ``application/vnd.dev.sigstore.bundle.v0.3+json``), found through the referrers API or,
  on registries without it, the ``sha256-<digest>`` tag-scheme fallback index.

A push uploads every blob and the signature first and puts the tagged manifest last: the
tag appears whole or not at all. A pull checks the registry's digests (the manifest, every
blob as it streams) *and* the bundle's own hashes (the manifest's file table, the config
against ``manifest.json``) before the version is cached, once per bundle digest, under
``$KERAS_BUNDLE_CACHE/oci``.

Credentials, authentication and HTTP are `bundle.storage.registry`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    BundleNotFoundError,
    IntegrityError,
    StorageError,
    UnsupportedFormatError,
    UsageError,
    bullet_list,
)
from ..format.digest import canonical_json, manifest_digest, require_digest
from ..format.integrity import CHUNK_SIZE, verify_files
from ..format.layout import (
    CUSTOM_OBJECTS_DIR,
    EXAMPLE_DIR,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    PROFILE_DIR,
    REQUIREMENTS_FILE,
    SIGNATURE_FILE,
    STEPS_DIR,
)
from ..format.manifest import Manifest, parse_manifest
from ..format.signing import MEDIA_TYPE as SIGNATURE_MEDIA_TYPE
from .local import version_key
from .paths import cache_dir
from .registry import (
    DIGEST_PATTERN,
    MANIFEST_MEDIA_TYPE,
    SCHEME,
    Registry,
    json_bytes,
)

ARTIFACT_TYPE = "application/vnd.keras-bundle.v1+json"
"""The artifact type of a bundle: its config is the bundle manifest, not a ModelPack config."""
CONFIG_MEDIA_TYPE = "application/vnd.keras-bundle.manifest.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"  # ModelPack's layer annotation
CREATED = "org.opencontainers.image.created"
VERSION = "org.opencontainers.image.version"
BUNDLE_DIGEST = "dev.keras-bundle.digest"
# CNCF ModelPack raw (uncompressed, one file per layer) media types, by what a file is.
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
DATASET = "application/vnd.cncf.model.dataset.v1.raw"

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")

__all__ = [
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "PushResult",
    "Reference",
    "describe",
    "fetch",
    "is_oci",
    "list_tags",
    "pin",
    "push",
]


def is_oci(location: object) -> bool:
    """True for an ``oci://`` location."""
    return str(location).startswith(SCHEME)


# ---------------------------------------------------------------------------- references
@dataclass(frozen=True)
class Reference:
    """A parsed ``oci://registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, location: str) -> Reference:
        """Parse an ``oci://`` location.

        Raises:
            UsageError: naming the part that is not valid.
        """
        text = str(location)
        if not text.startswith(SCHEME):
            raise UsageError(f"{text!r} is not an OCI location: expected {SCHEME}HOST/REPO:TAG.")
        rest = text[len(SCHEME) :]
        digest = None
        if "@" in rest:
            rest, _, digest = rest.partition("@")
            if not DIGEST_PATTERN.match(digest):
                raise UsageError(
                    f"{text}: {digest!r} is not a digest; expected @sha256: and 64 lowercase "
                    "hex digits."
                )
        registry, _, path = rest.partition("/")
        tag = None
        head, colon, tail = path.rpartition(":")
        if colon and "/" not in tail:
            path, tag = head, tail
            if not _TAG.match(tag):
                raise UsageError(
                    f"{text}: {tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at "
                    "most 128, not starting with '.' or '-')."
                )
        if not registry or not _HOST.match(registry) or not path:
            raise UsageError(
                f"{text!r} is not an OCI location: expected {SCHEME}HOST[:PORT]/REPOSITORY"
                "[:TAG][@sha256:DIGEST], e.g. oci://registry.example.com/models/churn:1.2.0."
            )
        bad = [part for part in path.split("/") if not _COMPONENT.match(part)]
        if bad:
            raise UsageError(
                f"{text}: repository {path!r} has an invalid part {bad[0]!r}: repository "
                "names are lowercase letters and digits, separated by '.', '_', '__' or '-'."
            )
        return cls(registry, path, tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)

    def pinned(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, as OCI clients name a repository."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifest endpoint takes: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{SCHEME}{self.name}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


# ---------------------------------------------------------------------------- the artifact
def media_type(name: str) -> str:
    """The ModelPack media type of a bundle file, by what it holds."""
    top = name.split("/", 1)[0]
    if name == "model.keras":
        return WEIGHT
    if top in (STEPS_DIR,) or name == MANIFEST_FILE:
        return WEIGHT_CONFIG
    if top == CUSTOM_OBJECTS_DIR or name == REQUIREMENTS_FILE:
        return CODE
    if top in (EXAMPLE_DIR, PROFILE_DIR):
        return DATASET
    if name == MODEL_CARD_FILE:
        return DOC
    return WEIGHT_CONFIG


def _layer(name: str, digest: str, size: int) -> dict[str, Any]:
    return {
        "mediaType": media_type(name),
        "digest": digest,
        "size": size,
        "annotations": {TITLE: name, FILEPATH: name},
    }


def _artifact(manifest: Manifest, raw: bytes, config: bytes) -> dict[str, Any]:
    """The OCI image manifest of a bundle version: deterministic for the same content."""
    layers = [
        _layer(name, "sha256:" + record["sha256"], int(record["size"]))
        for name, record in sorted(manifest.files.items())
    ]
    layers.append(_layer(MANIFEST_FILE, "sha256:" + hashlib.sha256(raw).hexdigest(), len(raw)))
    bundle_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": bundle_digest, "size": len(config)},
        "layers": layers,
        "annotations": {
            TITLE: manifest.name,
            VERSION: manifest.version,
            CREATED: manifest.created,
            BUNDLE_DIGEST: bundle_digest,
        },
    }


def _signature_artifact(signature: bytes, subject: dict[str, Any]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": SIGNATURE_MEDIA_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest(),
            "size": len(EMPTY_BLOB),
        },
        "layers": [
            {
                "mediaType": SIGNATURE_MEDIA_TYPE,
                "digest": "sha256:" + hashlib.sha256(signature).hexdigest(),
                "size": len(signature),
                "annotations": {TITLE: SIGNATURE_FILE},
            }
        ],
        "subject": subject,
        "annotations": {CREATED: _now()},
    }


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _file_chunks(path: Path) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk

    return chunks


# ---------------------------------------------------------------------------- push
@dataclass(frozen=True)
class PushResult:
    """What `push` did.

    Attributes:
        reference: the pushed artifact, pinned: ``oci://host/repo:tag@sha256:...``.
        digest: the bundle digest (the artifact's config digest).
        manifest_digest: the registry's digest of the OCI manifest (the ``@sha256:`` of
            `reference`).
        uploaded: the files uploaded; `skipped`: those the repository already had.
        signed: whether a signature went along (as a referrer).
    """

    reference: str
    digest: str
    manifest_digest: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    signed: bool = False


def push(
    directory: Path,
    location: str,
    *,
    progress: Callable[[str, int, bool], None] | None = None,
    **options: Any,
) -> PushResult:
    """Push a verified version directory to ``oci://host/repo[:tag]`` (default tag: its
    version). Blobs the repository has are skipped; the tag is written last.

    `progress(name, size, uploaded)` is called after each file.

    Raises:
        RegistryError: the registry refused or failed; the tag is then not written.
        UsageError: the location has a digest, or the version is not a valid tag.
    """
    directory = Path(directory)
    raw = (directory / MANIFEST_FILE).read_bytes()
    manifest = parse_manifest(raw, source=str(directory / MANIFEST_FILE))
    verify_files(directory, manifest.files, label=manifest.label)  # never push a changed copy
    ref = Reference.parse(location)
    if ref.digest:
        raise UsageError(
            f"Push to a tag, not a digest: {location} (the registry computes the digest)."
        )
    if ref.tag is None:
        if not _TAG.match(manifest.version):
            raise UsageError(
                f"Version {manifest.version!r} of {manifest.label} is not a valid OCI tag: "
                f"push to an explicit tag, e.g. {SCHEME}{ref.name}:"
                f"{re.sub(r'[^A-Za-z0-9_.-]', '-', manifest.version)}."
            )
        ref = ref.with_tag(manifest.version)
    config = canonical_json(json.loads(raw))
    artifact = _artifact(manifest, raw, config)
    data = json_bytes(artifact)
    manifest_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    uploaded, skipped = [], []
    with Registry(ref.registry, **options) as registry:
        sources: list[tuple[str, dict[str, Any], Callable[[], Iterator[bytes]]]] = [
            (
                layer["annotations"][TITLE],
                layer,
                _file_chunks(directory / layer["annotations"][TITLE]),
            )
            for layer in artifact["layers"]
        ]
        sources.append(("(config)", artifact["config"], lambda: iter([config])))
        for name, descriptor, content in sources:
            if registry.has_blob(ref.repository, descriptor["digest"]):
                skipped.append(name)
                fresh = False
            else:
                registry.put_blob(ref.repository, descriptor["digest"], descriptor["size"], content)
                uploaded.append(name)
                fresh = True
            if progress is not None and name != "(config)":
                progress(name, int(descriptor["size"]), fresh)
        signed = (directory / SIGNATURE_FILE).is_file()
        if signed:
            subject = {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": len(data),
            }
            _push_signature(registry, ref.repository, directory / SIGNATURE_FILE, subject)
        registry.put_manifest(ref.repository, str(ref.tag), data, MANIFEST_MEDIA_TYPE)
    return PushResult(
        reference=f"{ref}@{manifest_digest}",
        digest=artifact["config"]["digest"],
        manifest_digest=manifest_digest,
        uploaded=[n for n in uploaded if n != "(config)"],
        skipped=[n for n in skipped if n != "(config)"],
        signed=signed,
    )


def _push_signature(
    registry: Registry, repository: str, path: Path, subject: dict[str, Any]
) -> None:
    """Upload a signature as a referrer of `subject` (before the subject's tag exists)."""
    signature = path.read_bytes()
    artifact = _signature_artifact(signature, subject)
    for blob in (EMPTY_BLOB, signature):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        if not registry.has_blob(repository, digest):
            registry.put_blob(repository, digest, len(blob), lambda blob=blob: iter([blob]))
    data = json_bytes(artifact)
    descriptor = {
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "artifactType": SIGNATURE_MEDIA_TYPE,
        "annotations": artifact["annotations"],
    }
    registry.add_referrer(repository, subject["digest"], data, descriptor)


# ---------------------------------------------------------------------------- pull
@dataclass(frozen=True)
class _Resolved:
    ref: Reference  # pinned to the manifest digest
    artifact: dict[str, Any]
    config_digest: str


def _resolve(registry: Registry, ref: Reference, version: str | None) -> _Resolved:
    if version is not None:
        if (ref.tag is not None or ref.digest is not None) and version != ref.tag:
            raise UsageError(f"Pass either {ref} or version={version!r}, not both.")
        ref = ref.with_tag(version)
    if ref.tag is None and ref.digest is None:
        ref = ref.with_tag(_highest_tag(registry, ref))
    cached = _cached_manifest(ref.digest) if ref.digest else None
    if cached is not None:
        data, digest = cached, ref.digest
    else:
        data, digest, _type = registry.get_manifest(ref.repository, ref.reference)
    artifact = _artifact_of(data, ref)
    _cache_manifest(digest, data)
    return _Resolved(ref.pinned(digest), artifact, artifact["config"]["digest"])


def _highest_tag(registry: Registry, ref: Reference) -> str:
    tags = [t for t in registry.tags(ref.repository) if not t.startswith("sha256-")]
    if not tags:
        raise BundleNotFoundError(
            f"{SCHEME}{ref.name} has no tags: push a bundle there first "
            f"(bundle push PATH {SCHEME}{ref.name}:TAG).",
            location=f"{SCHEME}{ref.name}",
        )
    return sorted(tags, key=version_key)[-1]


def _artifact_of(data: bytes, ref: Reference) -> dict[str, Any]:
    try:
        artifact = json.loads(data)
        config_type = artifact["config"]["mediaType"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsupportedFormatError(
            f"{ref} is not an OCI image manifest (an index or another kind of artifact?).",
            found=None,
            supported=CONFIG_MEDIA_TYPE,
        ) from exc
    if config_type != CONFIG_MEDIA_TYPE:
        raise UnsupportedFormatError(
            f"{ref} is not a keras-bundle artifact: its config is {config_type!r}, "
            f"expected {CONFIG_MEDIA_TYPE!r}.\nPush bundles with `bundle push`.",
            found=config_type,
            supported=CONFIG_MEDIA_TYPE,
        )
    return artifact


def _oci_cache() -> Path:
    return cache_dir() / "oci"


def _cached_manifest(digest: str) -> bytes | None:
    path = _oci_cache() / "manifests" / digest.replace(":", "-")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data if "sha256:" + hashlib.sha256(data).hexdigest() == digest else None


def _cache_manifest(digest: str, data: bytes) -> None:
    folder = _oci_cache() / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / digest.replace(":", "-")
    if target.exists():
        return
    tmp = folder / f".{target.name}.{os.urandom(4).hex()}"
    tmp.write_bytes(data)
    os.replace(tmp, target)


def fetch(
    location: str, version: str | None = None, *, digest: str | None = None, **options: Any
) -> Path:
    """A local, verified copy of the bundle at an ``oci://`` location (cached by digest).

    With `digest` (a bundle digest), any other content is refused before a file blob is
    downloaded.

    Raises:
        BundleNotFoundError: no such repository, tag or digest.
        DigestMismatchError: the artifact is not the pinned bundle.
        IntegrityError: a blob or the manifest does not match its digest or the bundle's
            own hashes.
        RegistryError: the registry refused or failed.
    """
    ref = Reference.parse(location)
    offline = ref.digest is not None and _cached_manifest(ref.digest) is not None
    with Registry(ref.registry, **options) as registry:
        resolved = _resolved(registry, ref, version, digest)
        target = _oci_cache() / "bundles" / resolved.config_digest.replace(":", "-")
        version_dir = _complete(target)
        if version_dir is None:
            target.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
            try:
                manifest = _download(registry, resolved, scratch)
                version_dir = target / manifest.version
                try:
                    os.rename(scratch, version_dir)
                except OSError as exc:
                    if _complete(target) is None:  # not another process caching it first
                        raise StorageError(f"Could not cache {ref} in {target}: {exc}.") from exc
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if not offline:
            _refresh_signature(registry, resolved, version_dir)
        return version_dir


def download(
    location: str,
    directory: Path,
    version: str | None = None,
    *,
    digest: str | None = None,
    **options: Any,
) -> Manifest:
    """Download and verify the bundle at an ``oci://`` location into the empty `directory`
    (with its signature), bypassing the cache; return its manifest. Raises as `fetch`."""
    ref = Reference.parse(location)
    with Registry(ref.registry, **options) as registry:
        resolved = _resolved(registry, ref, version, digest)
        manifest = _download(registry, resolved, Path(directory))
        _refresh_signature(registry, resolved, Path(directory))
    return manifest


def _resolved(
    registry: Registry, ref: Reference, version: str | None, digest: str | None
) -> _Resolved:
    resolved = _resolve(registry, ref, version)
    if digest is not None:
        require_digest(digest, resolved.config_digest, label="The bundle", where=str(resolved.ref))
    return resolved


def _complete(target: Path) -> Path | None:
    if not target.is_dir():
        return None
    for entry in target.iterdir():
        if not entry.name.startswith(".") and (entry / MANIFEST_FILE).is_file():
            return entry
    return None


def _download(registry: Registry, resolved: _Resolved, directory: Path) -> Manifest:
    """Download every file of the artifact into `directory`, each checked as it streams.

    Nothing is left unchecked: the layers are exactly the manifest's files with the
    manifest's sha256 and size (`_check_layers`), every blob's bytes hash to its layer's
    digest (`_download_blob`), and ``manifest.json`` is the config. Hashing the files again
    would only read them twice.
    """
    ref, artifact = resolved.ref, resolved.artifact
    config = registry.read_blob(ref.repository, resolved.config_digest)
    manifest = parse_manifest(config, source=f"the config of {ref}")
    layers = _layers_by_name(artifact, ref)
    _check_layers(layers, manifest, ref)
    # The manifest (validated) decided every name: none is absolute or climbs out.
    for name, layer in sorted(layers.items()):
        destination = directory / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        _download_blob(registry, ref, layer, destination, name)
    raw = (directory / MANIFEST_FILE).read_bytes()
    if manifest_digest(raw) != resolved.config_digest:
        raise IntegrityError(
            f"{MANIFEST_FILE} of {ref} is not the manifest of the artifact's config "
            f"({manifest_digest(raw)} vs {resolved.config_digest}): the artifact was "
            "assembled from two bundles.\nPush the bundle again with `bundle push`."
        )
    return manifest


def _layers_by_name(artifact: Mapping[str, Any], ref: Reference) -> dict[str, dict[str, Any]]:
    layers = {}
    for layer in artifact.get("layers", []):
        name = (layer.get("annotations") or {}).get(FILEPATH) or (
            layer.get("annotations") or {}
        ).get(TITLE)
        if not name:
            raise IntegrityError(f"A layer of {ref} has no file name ({FILEPATH} annotation).")
        layers[str(name)] = layer
    return layers


def _check_layers(
    layers: Mapping[str, Mapping[str, Any]], manifest: Manifest, ref: Reference
) -> None:
    """The registry's layers must be exactly the bundle's files, with the same digests."""
    expected = {**manifest.files}
    missing = sorted({*expected, MANIFEST_FILE} - set(layers))
    extra = sorted(set(layers) - {*expected, MANIFEST_FILE})
    differing = [
        name
        for name, record in sorted(expected.items())
        if name in layers
        and (
            layers[name].get("digest") != "sha256:" + record["sha256"]
            or int(layers[name].get("size", -1)) != int(record["size"])
        )
    ]
    if not (missing or extra or differing):
        return
    lines = [f"{name}: no layer" for name in missing]
    lines += [f"{name}: a layer the bundle manifest does not list" for name in extra]
    lines += [f"{name}: the layer's digest or size is not the manifest's" for name in differing]
    raise IntegrityError(
        f"The layers of {ref} do not match the bundle's manifest:\n{bullet_list(lines)}\n"
        "The artifact was not written by `bundle push`, or was changed: push it again.",
        mismatched=differing,
        missing=missing,
        unexpected=extra,
    )


def _download_blob(
    registry: Registry, ref: Reference, layer: Mapping[str, Any], destination: Path, name: str
) -> None:
    digest, size = str(layer["digest"]), int(layer["size"])
    hasher, written = hashlib.sha256(), 0
    chunks = registry.iter_blob(ref.repository, digest)
    with open(destination, "wb") as out:
        for chunk in chunks:
            written += len(chunk)
            if written > size:  # more than the layer says: stop reading, refuse below
                chunks.close()
                break
            hasher.update(chunk)
            out.write(chunk)
    found = "sha256:" + hasher.hexdigest()
    if written != size or found != digest:
        raise IntegrityError(
            f"{name} from {ref} does not match its digest: {written:,} bytes with sha256 "
            f"{found[7:19]}..., expected {size:,} bytes with {digest[7:19]}...\n"
            "The blob was changed in the registry (or on the way). Do not use it; push the "
            "bundle again from a verified copy.",
            mismatched=[name],
        )


def _refresh_signature(registry: Registry, resolved: _Resolved, version_dir: Path) -> None:
    """Put the newest signature referrer of the artifact in the copy as ``model.sig``."""
    ref = resolved.ref
    assert ref.digest is not None
    found = registry.referrers(ref.repository, ref.digest, SIGNATURE_MEDIA_TYPE)
    if not found:
        return
    newest = max(found, key=lambda d: (d.get("annotations") or {}).get(CREATED, ""))
    data, _digest, _type = registry.get_manifest(ref.repository, newest["digest"])
    layers = json.loads(data).get("layers") or []
    if not layers:
        return
    signature = registry.read_blob(ref.repository, layers[0]["digest"])
    target = version_dir / SIGNATURE_FILE
    if target.is_file() and target.read_bytes() == signature:
        return
    tmp = version_dir / f".{SIGNATURE_FILE}.{os.urandom(4).hex()}"
    tmp.write_bytes(signature)
    os.replace(tmp, target)


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Described:
    """An artifact's bundle manifest and signature, read without downloading its files."""

    reference: str
    manifest_text: bytes
    signature: bytes | None


def describe(location: str, version: str | None = None, **options: Any) -> Described:
    """The manifest (the config blob) and signature of an ``oci://`` bundle."""
    ref = Reference.parse(location)
    with Registry(ref.registry, **options) as registry:
        resolved = _resolve(registry, ref, version)
        config = registry.read_blob(resolved.ref.repository, resolved.config_digest)
        signature = None
        found = registry.referrers(
            resolved.ref.repository, str(resolved.ref.digest), SIGNATURE_MEDIA_TYPE
        )
        if found:
            newest = max(found, key=lambda d: (d.get("annotations") or {}).get(CREATED, ""))
            data, _d, _t = registry.get_manifest(resolved.ref.repository, newest["digest"])
            layer = (json.loads(data).get("layers") or [None])[0]
            if layer:
                signature = registry.read_blob(resolved.ref.repository, layer["digest"])
    return Described(_shown(ref, resolved.ref), config, signature)


def _shown(asked: Reference, pinned: Reference) -> str:
    """``oci://host/repo:tag@sha256:...``: what was asked for, and what it resolved to."""
    return str(Reference(asked.registry, asked.repository, asked.tag, pinned.digest))


def list_tags(location: str, **options: Any) -> list[tuple[str, str, bytes]]:
    """``(tag, manifest digest, bundle manifest text)`` for every bundle tag of a repository,
    lowest version first (the ``sha256-*`` fallback tags and other artifacts are skipped)."""
    ref = Reference.parse(location)
    if ref.tag or ref.digest:
        raise UsageError(f"List a repository, not one artifact: {SCHEME}{ref.name}.")
    found = []
    with Registry(ref.registry, **options) as registry:
        for tag in sorted(registry.tags(ref.repository), key=version_key):
            if tag.startswith("sha256-"):
                continue
            data, digest, _type = registry.get_manifest(ref.repository, tag)
            with contextlib.suppress(UnsupportedFormatError):
                artifact = _artifact_of(data, ref.with_tag(tag))
                config = registry.read_blob(ref.repository, artifact["config"]["digest"])
                found.append((tag, digest, config))
    return found


def pin(location: str, version: str | None = None, **options: Any) -> str:
    """The location pinned to its manifest digest (``oci://host/repo@sha256:...``): what a
    tag points at now, so that later reads see the same artifact even if the tag moves."""
    ref = Reference.parse(location)
    with Registry(ref.registry, **options) as registry:
        return str(_resolve(registry, ref, version).ref)
