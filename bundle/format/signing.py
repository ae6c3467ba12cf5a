"""Signatures in the OpenSSF `model_signing` format: sign a version directory, verify one.

A signature is a Sigstore bundle holding a DSSE envelope over an in-toto statement whose
predicate lists every file's sha256: exactly what ``model_signing sign key DIR`` writes, and
written by the `model_signing` library itself (the ``sign`` extra), so
``model_signing verify key DIR --signature DIR/model.sig --public_key KEY.pub`` verifies
ours and we verify theirs.

Where it lives: ``<version>/model.sig`` (`SIGNATURE_FILE`, `model_signing`'s default name).
The signature covers ``manifest.json`` and every file the manifest lists, and nothing else;
it cannot list itself, so both sides leave it out: our integrity check skips it as it skips
the manifest, and `model_signing` leaves the signature file out of what it hashes (it
records ``model.sig`` in the statement's ``ignore_paths``). A verified signature must name
exactly the manifest plus the manifest's file table: a signature over some other set of
files (another bundle's, or one that ignores a file) is refused.

Key signatures (elliptic-curve keys, as `model_signing` supports) and certificate
signatures (a signing certificate and its chain, verified against given roots) both work
offline. Reading a signature to show who signed it (`read_signature`) needs neither the
library nor the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, SignatureError, UsageError, bullet_list
from .layout import MANIFEST_FILE, SIGNATURE_FILE

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
"""The signature file's media type (a Sigstore bundle), also its OCI artifact type."""
PREDICATE_TYPE = "https://model_signing/signature/v1.0"

__all__ = [
    "MEDIA_TYPE",
    "SignatureInfo",
    "key_hint",
    "read_signature",
    "sign_directory",
    "verify_directory",
]


@dataclass(frozen=True)
class SignatureInfo:
    """What a signature file says, read without verifying it.

    Attributes:
        path: the signature file.
        kind: ``"key"``, ``"certificate"`` or ``"sigstore"`` (keyless, with a transparency
            log entry).
        signer: who it says signed: ``key <sha256 of the public key's PEM>`` or the signing
            certificate's subject.
        files: the files it signs, with their sha256, as the statement lists them.
    """

    path: Path
    kind: str
    signer: str
    files: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "kind": self.kind, "signer": self.signer}


def read_signature(path: Path, data: bytes | None = None) -> SignatureInfo:
    """Parse a `model_signing` signature file, or its bytes `data` (no cryptography:
    nothing is verified).

    Raises:
        SignatureError: the file is not a Sigstore bundle with an in-toto statement.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_bytes() if data is None else data)
        material = document["verificationMaterial"]
        envelope = document["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        resources = statement["predicate"]["resources"]
        files = {str(item["name"]): str(item["digest"]) for item in resources}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(
            f"{path} is not a model_signing signature: {type(exc).__name__}: {exc}.\n"
            "Sign the bundle again with `bundle sign` or `model_signing sign`.",
            signature=str(path),
        ) from exc
    if document.get("mediaType") != MEDIA_TYPE or statement.get("predicateType") != (
        PREDICATE_TYPE
    ):
        raise SignatureError(
            f"{path} is a {document.get('mediaType')!r} signature with predicate "
            f"{statement.get('predicateType')!r}; keras-bundle reads {MEDIA_TYPE!r} "
            f"with predicate {PREDICATE_TYPE!r} (model_signing 1.x).\n"
            "Sign the bundle again with `bundle sign` or `model_signing sign`.",
            signature=str(path),
        )
    kind, signer = _signer(material)
    return SignatureInfo(path=path, kind=kind, signer=signer, files=files)


def _signer(material: Mapping[str, Any]) -> tuple[str, str]:
    if "x509CertificateChain" in material:
        certificates = material["x509CertificateChain"].get("certificates") or [{}]
        return "certificate", _certificate_subject(certificates[0].get("rawBytes", ""))
    if "certificate" in material:
        return "sigstore", _certificate_subject(material["certificate"].get("rawBytes", ""))
    hint = (material.get("publicKey") or {}).get("hint")
    return "key", f"key {hint}" if hint else "a key (the signature names none)"


def _certificate_subject(raw: str) -> str:
    try:
        from cryptography import x509

        certificate = x509.load_der_x509_certificate(base64.b64decode(raw))
    except ImportError:
        return "a certificate"
    except ValueError:
        return "an unreadable certificate"
    return certificate.subject.rfc4514_string() or "a certificate with an empty subject"


def key_hint(public_key: Path) -> str:
    """How `model_signing` names a public key: the sha256 of its PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(Path(public_key).read_bytes())
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _model_signing() -> Any:
    try:
        import model_signing
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as exc:
        raise MissingDependencyError(
            f"Signing and verifying bundles needs the model-signing package ({exc}).\n"
            "Install it with: pip install 'keras-bundle[sign]'",
            package="model-signing",
            extra="sign",
        ) from exc
    return model_signing


def sign_directory(
    directory: Path,
    *,
    private_key: Path,
    certificate: Path | None = None,
    certificate_chain: Sequence[Path] = (),
    password: str | None = None,
) -> Path:
    """Sign a version directory with `model_signing`; write and return ``<dir>/model.sig``.

    Signs what ``model_signing sign key DIR --signature DIR/model.sig`` signs (every file
    but the signature and git files); with `certificate` (and its `certificate_chain`, up to
    the root), what ``model_signing sign certificate`` signs.

    Raises:
        UsageError: the key cannot be read, is not an elliptic-curve key, or does not match
            the certificate.
        MissingDependencyError: model-signing is not installed.
    """
    if certificate is not None and not certificate_chain:
        # model_signing writes the chain into the signature and cannot write an empty one.
        raise UsageError(
            f"Signing with the certificate {certificate} needs its chain: pass "
            "certificate_chain= (--certificate-chain) with the intermediate certificates and "
            "the root, as PEM files."
        )
    ms = _model_signing()
    directory = Path(directory)
    target = directory / SIGNATURE_FILE
    hashing = ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE])
    config = ms.signing.Config().set_hashing_config(hashing)
    try:
        if certificate is None:
            config.use_elliptic_key_signer(private_key=Path(private_key), password=password)
        else:
            config.use_certificate_signer(
                private_key=Path(private_key),
                signing_certificate=Path(certificate),
                certificate_chain=[Path(c) for c in certificate_chain],
            )
    except FileNotFoundError as exc:
        raise UsageError(f"No such key or certificate file: {exc.filename}.") from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"Cannot sign with {private_key}: {exc}.\nmodel_signing signs with an "
            "elliptic-curve private key in PEM (P-256, P-384 or P-521), e.g. "
            "`openssl ecparam -name prime256v1 -genkey -noout -out key.pem`."
        ) from exc
    scratch = directory / f".{SIGNATURE_FILE}.tmp"
    try:
        config.sign(directory, scratch)
        scratch.replace(target)  # a reader sees the old signature or the new, never half
    finally:
        scratch.unlink(missing_ok=True)
    return target


def verify_directory(
    directory: Path,
    *,
    files: Mapping[str, Mapping[str, Any]],
    label: str,
    manifest_bytes: bytes | None = None,
    public_key: str | Path | None = None,
    certificate_chain: Iterable[str | Path] | None = None,
    signature: str | Path | None = None,
) -> SignatureInfo:
    """Verify the signature of a version directory: it verifies with the key (or chains up to
    the certificate roots), and it signs exactly the manifest and the files of `files`, the
    manifest's file table (already checked against the disk by `verify_files`).

    `manifest_bytes` are the manifest a snapshot verified the files against (default: read
    ``manifest.json``): the signature must sign those bytes, so what a loader uses is what
    was signed even if the directory changes while `model_signing` reads it.

    Raises:
        SignatureError: no signature, a signature that does not verify, or one over other
            files, naming the files or the signer.
        MissingDependencyError: model-signing is not installed.
    """
    directory = Path(directory)
    path = Path(signature) if signature is not None else directory / SIGNATURE_FILE
    public_key = Path(public_key) if public_key is not None else None
    if public_key is None and certificate_chain is None:
        raise UsageError("Pass public_key= or certificate_chain= to verify a signature.")
    if not path.is_file():
        raise SignatureError(
            f"{label} is not signed: there is no signature at {path}.\n"
            f"Sign it with `bundle sign {directory} --key KEY.pem`, or pass the signature's "
            "path (signature=, --signature).",
            signature=str(path),
        )
    info = read_signature(path)
    ms = _model_signing()
    config = ms.verifying.Config()
    try:
        if public_key is not None:
            config.use_elliptic_key_verifier(public_key=Path(public_key))
        else:
            config.use_certificate_verifier(certificate_chain=[Path(c) for c in certificate_chain])
    except FileNotFoundError as exc:
        raise UsageError(f"No such key or certificate file: {exc.filename}.") from exc
    except ValueError as exc:
        raise UsageError(f"Cannot verify with {public_key or certificate_chain}: {exc}.") from exc
    config.set_hashing_config(_hashing_config(ms, path))
    try:
        config.verify(directory, path)
    except Exception as exc:  # model_signing, cryptography and OpenSSL each raise their own
        raise _refusal(
            exc, info, directory=directory, files=files, label=label, public_key=public_key
        ) from exc
    if manifest_bytes is None:
        manifest_bytes = (directory / MANIFEST_FILE).read_bytes()
    _check_coverage(info, files, hashlib.sha256(manifest_bytes).hexdigest(), label=label)
    return info


def _hashing_config(ms: Any, path: Path) -> Any:
    """The hashing the signature records, always leaving our signature file out.

    `model_signing` guesses the same from the statement, but leaves out only the paths the
    signer recorded: a signature made elsewhere and copied into the bundle as ``model.sig``
    would then count itself as an unsigned file.
    """
    statement = json.loads(
        base64.b64decode(json.loads(path.read_bytes())["dsseEnvelope"]["payload"])
    )
    args = statement["predicate"]["serialization"]
    config = ms.hashing.Config()
    if args.get("method") == "shards":
        config.use_shard_serialization(
            hashing_algorithm=args["hash_type"],
            shard_size=args["shard_size"],
            allow_symlinks=bool(args.get("allow_symlinks")),
        )
    else:
        config.use_file_serialization(
            hashing_algorithm=args["hash_type"], allow_symlinks=bool(args.get("allow_symlinks"))
        )
    ignored = [SIGNATURE_FILE, *args.get("ignore_paths", [])]
    return config.set_ignored_paths(paths=ignored).set_allow_symlinks(
        bool(args.get("allow_symlinks"))
    )


def _refusal(
    exc: Exception,
    info: SignatureInfo,
    *,
    directory: Path,
    files: Mapping[str, Mapping[str, Any]],
    label: str,
    public_key: Path | None,
) -> SignatureError:
    text = str(exc)
    if text.startswith("Signature mismatch"):
        names, lines = _differences(info, directory, files)
        return SignatureError(
            f"The signature {info.path.name} of {label} (signed by {info.signer}) is valid, "
            "but for other content:\n"
            + bullet_list(lines or [text], limit=12)
            + "\nThe bundle or its signature was replaced (a signature of another bundle?). "
            "Do not load it: get the bundle and its signature again from the signer.",
            signature=str(info.path),
            signer=info.signer,
            files=names,
        )
    if public_key is not None and "Key mismatch" in text:
        return SignatureError(
            f"The signature {info.path.name} of {label} was made by {info.signer}, not by "
            f"the public key {public_key} (key {key_hint(public_key)}).\n"
            "Verify with the public key of whoever signed it, or refuse this bundle.",
            signature=str(info.path),
            signer=info.signer,
        )
    return SignatureError(
        f"The signature {info.path.name} of {label} (signed by {info.signer}) does not "
        f"verify: {type(exc).__name__}{': ' + text if text else ''}.\n"
        "The signature was altered, or made with another key or certificate: do not load "
        "this bundle; get it and its signature again from the signer.",
        signature=str(info.path),
        signer=info.signer,
    )


def _differences(
    info: SignatureInfo, directory: Path, files: Mapping[str, Mapping[str, Any]]
) -> tuple[list[str], list[str]]:
    """The files whose signed digest differs from the one on disk, one line each."""
    from .integrity import hash_file

    on_disk = {name: str(record["sha256"]) for name, record in files.items()}
    on_disk[MANIFEST_FILE] = hash_file(directory / MANIFEST_FILE)
    names, lines = [], []
    for name in sorted(set(on_disk) | set(info.files)):
        signed, found = info.files.get(name), on_disk.get(name)
        if signed == found:
            continue
        names.append(name)
        if signed is None:
            lines.append(f"{name}: in the bundle, not signed")
        elif found is None:
            lines.append(f"{name}: signed, not in the bundle")
        else:
            lines.append(f"{name}: sha256 {found[:12]}... in the bundle, {signed[:12]}... signed")
    return names, lines


def _check_coverage(
    info: SignatureInfo, files: Mapping[str, Mapping[str, Any]], manifest_sha256: str, *, label: str
) -> None:
    """The signature must sign the manifest and exactly the files the manifest lists."""
    recorded = {name: str(record["sha256"]) for name, record in files.items()}
    recorded[MANIFEST_FILE] = manifest_sha256
    signed = set(info.files)
    unsigned, foreign = sorted(set(recorded) - signed), sorted(signed - set(recorded))
    differing = sorted(
        name for name in set(recorded) & signed if recorded[name] != info.files[name]
    )
    if not (unsigned or foreign or differing):
        return
    parts = [
        f"The signature {info.path.name} of {label} (signed by {info.signer}) does not "
        "sign exactly this bundle's manifest and files:"
    ]
    if unsigned:
        parts.append(f"not signed:\n{bullet_list(unsigned)}")
    if foreign:
        parts.append(f"signed but not in the manifest:\n{bullet_list(foreign)}")
    if differing:
        parts.append(
            f"signed with other digests than the manifest records:\n{bullet_list(differing)}"
        )
    parts.append("Sign the bundle again with `bundle sign` (it signs every file).")
    raise SignatureError(
        "\n".join(parts),
        signature=str(info.path),
        signer=info.signer,
        files=unsigned + foreign + differing,
    )
