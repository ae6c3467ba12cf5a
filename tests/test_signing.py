"""Signatures in the OpenSSF model_signing format, checked both ways with the real package:
its command verifies what `bundle sign` writes, and we verify what its command signs.

A bundle whose signature does not verify (tampered content with recomputed hashes, a
signature replayed from another bundle, another signer's key, a signature that leaves a
file out) is refused before anything in it is deserialized.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil

import pytest
from conftest import ec_key_pair, model_signing, model_signing_key, plant_pickle

import bundle
from bundle import Bundle, IntegrityError, SignatureError, UsageError
from bundle.cli import main
from bundle.format.signing import key_hint, read_signature


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two signers' EC P-256 key pairs: {"alice": (key, private, public), "mallory": ...}."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: ec_key_pair(folder, name) for name in ("alice", "mallory")}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory, keys):
    """A root CA and a code-signing certificate for alice's key, made offline."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(common, public_key, *, issuer=None, signer, ca):
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keras-bundle tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )
        usage = dict.fromkeys(
            [
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer is not None else subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, **usage),
                critical=True,
            )
        )
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    def write(path, certificate):
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = issue("Test Root CA", ca_key.public_key(), signer=ca_key, ca=True)
    other_ca = issue("Another Root CA", other_key.public_key(), signer=other_key, ca=True)
    leaf = issue(
        "model-release-bot", keys["alice"][0].public_key(), issuer=ca, signer=ca_key, ca=False
    )
    return {
        "leaf": write(folder / "leaf.pem", leaf),
        "root": write(folder / "root.pem", ca),
        "other_root": write(folder / "other-root.pem", other_ca),
    }


@pytest.fixture
def signed(tabular_bundle, bundle_copy, keys):
    """A copy of the tabular bundle signed by alice with `bundle.sign`."""
    path, _ = tabular_bundle
    copy = bundle_copy(path)
    bundle.sign(copy, key=keys["alice"][1])
    return copy


# ---------------------------------------------------------------------------- both ways
def test_model_signing_verifies_what_bundle_sign_wrote(signed, keys):
    result = model_signing_key("verify", signed, keys["alice"][2])
    assert result.returncode == 0, result.stderr
    assert "Verification succeeded" in result.stdout
    info = read_signature(signed / "model.sig")
    assert info.kind == "key" and info.signer == f"key {key_hint(keys['alice'][2])}"
    manifest = json.loads((signed / "manifest.json").read_text())
    assert set(info.files) == {"manifest.json", *manifest["files"]}  # not model.sig itself
    # The signature is outside the file table: integrity and the digest are unchanged.
    assert bundle.verify(signed, load=False).ok


@pytest.mark.slow
def test_bundle_loads_what_model_signing_signed_inside_and_beside_the_bundle(
    tabular_bundle, bundle_copy, keys, tmp_path, tabular_data
):
    path, saved = tabular_bundle
    copy = bundle_copy(path)
    result = model_signing_key("sign", copy, keys["alice"][1])
    assert result.returncode == 0, result.stderr
    loaded = Bundle.load(copy, public_key=keys["alice"][2])
    frame, _ = tabular_data
    assert (loaded.predict(frame.iloc[:20]) == saved.predict(frame.iloc[:20])).all()
    # A detached signature, signed by their command outside the directory.
    plain = tmp_path / "plain" / "1.0.0"
    shutil.copytree(path, plain)
    detached = tmp_path / "churn.sig"
    result = model_signing_key("sign", plain, keys["alice"][1], signature=detached)
    assert result.returncode == 0, result.stderr
    report = bundle.verify(plain, public_key=keys["alice"][2], signature=detached, load=False)
    assert report.ok, str(report)
    assert [c.name for c in report.checks] == ["manifest", "files", "signature"]


def test_certificate_signatures_work_offline_both_ways(
    tabular_bundle, keys, certificates, tmp_path
):
    ours, theirs = tmp_path / "ours" / "1.0.0", tmp_path / "theirs" / "1.0.0"
    shutil.copytree(tabular_bundle[0], ours)
    shutil.copytree(tabular_bundle[0], theirs)
    with pytest.raises(UsageError, match=r"needs its chain: pass certificate_chain="):
        bundle.sign(ours, key=keys["alice"][1], certificate=certificates["leaf"])
    bundle.sign(
        ours,
        key=keys["alice"][1],
        certificate=certificates["leaf"],
        certificate_chain=[certificates["root"]],
    )
    info = read_signature(ours / "model.sig")
    assert (info.kind, info.signer) == ("certificate", "CN=model-release-bot,O=keras-bundle tests")
    result = model_signing(
        "verify",
        "certificate",
        ours,
        "--signature",
        ours / "model.sig",
        "--certificate_chain",
        certificates["root"],
    )
    assert result.returncode == 0, result.stderr
    result = model_signing(
        "sign",
        "certificate",
        theirs,
        "--signature",
        theirs / "model.sig",
        "--private_key",
        keys["alice"][1],
        "--signing_certificate",
        certificates["leaf"],
        "--certificate_chain",  # model_signing 1.1.1 cannot sign with an empty chain
        certificates["root"],
    )
    assert result.returncode == 0, result.stderr
    for signed_dir in (ours, theirs):
        report = bundle.verify(signed_dir, certificate_chain=[certificates["root"]], load=False)
        assert report.ok, str(report)
        with pytest.raises(
            SignatureError, match=r"signed by CN=model-release-bot,O=keras-bundle tests\) does not"
        ):
            Bundle.load(signed_dir, certificate_chain=[certificates["other_root"]])


# ---------------------------------------------------------------------------- refusals
def test_tampered_content_with_recomputed_hashes_is_refused_before_unpickling(
    signed, keys, tmp_path
):
    marker = tmp_path / "pwned"
    planted = plant_pickle(signed, marker)
    assert bundle.verify(signed, load=False).ok  # the hashes agree: only the signature sees it
    with pytest.raises(SignatureError, match=r"is valid, but for other content") as caught:
        Bundle.load(signed, public_key=keys["alice"][2], trusted=True)
    message = str(caught.value)
    assert f"- {planted}: in the bundle, not signed" in message
    assert "- steps/000-post-labelencoder.npz: signed, not in the bundle" in message
    assert "- manifest.json: sha256 " in message
    assert set(caught.value.files) == {
        planted,
        "steps/000-post-labelencoder.npz",
        "manifest.json",
    }
    assert not marker.exists()


def test_a_signature_replayed_from_another_bundle_is_refused(
    signed, image_bundle, bundle_copy, keys
):
    other = bundle_copy(image_bundle[0])
    bundle.sign(other, key=keys["alice"][1])
    shutil.copy(other / "model.sig", signed / "model.sig")
    with pytest.raises(SignatureError, match=r"valid, but for other content") as caught:
        Bundle.load(signed, public_key=keys["alice"][2])
    assert "model.keras: sha256 " in str(caught.value)
    assert caught.value.signer == f"key {key_hint(keys['alice'][2])}"


def test_another_signers_key_is_named_in_the_refusal(signed, keys):
    with pytest.raises(
        SignatureError, match=r"was made by key [0-9a-f]{64}, not by the public key"
    ):
        Bundle.load(signed, public_key=keys["mallory"][2])


def test_an_altered_signature_does_not_verify(signed, keys):
    document = json.loads((signed / "model.sig").read_text())
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (signed / "model.sig").write_text(json.dumps(document))
    with pytest.raises(SignatureError, match=r"does not verify: InvalidSignature"):
        Bundle.load(signed, public_key=keys["alice"][2])


def test_a_signature_that_leaves_a_file_out_is_refused_though_model_signing_accepts_it(
    tabular_bundle, bundle_copy, keys
):
    copy = bundle_copy(tabular_bundle[0])
    signed = model_signing_key(
        "sign", copy, keys["alice"][1], "--ignore-paths", copy / "model.keras"
    )
    assert signed.returncode == 0, signed.stderr
    theirs = model_signing_key("verify", copy, keys["alice"][2])
    assert theirs.returncode == 0  # their check is relative to what the signer chose
    with pytest.raises(SignatureError, match=r"not signed:\n- model\.keras") as caught:
        Bundle.load(copy, public_key=keys["alice"][2])
    assert caught.value.files == ["model.keras"]


def test_an_unsigned_bundle_is_refused_when_a_key_is_given(tabular_bundle, keys):
    with pytest.raises(
        SignatureError, match=r"is not signed: there is no signature at .*model\.sig"
    ):
        Bundle.load(tabular_bundle[0], public_key=keys["alice"][2])


def test_signing_refuses_a_changed_bundle_and_a_key_model_signing_cannot_use(
    tabular_bundle, bundle_copy, tmp_path
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    copy = bundle_copy(tabular_bundle[0])
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(UsageError, match=r"elliptic-curve private key in PEM"):
        bundle.sign(copy, key=rsa_key)
    assert not (copy / "model.sig").exists()
    (copy / "requirements.txt").write_text("tampered\n")
    with pytest.raises(IntegrityError, match=r"requirements\.txt"):
        bundle.sign(copy, key=rsa_key)


def test_a_signed_archive_keeps_its_signature(signed, keys, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))
    archive = bundle.archive(signed, tmp_path / "churn-1.0.0.tar.gz")
    report = bundle.verify(archive, public_key=keys["alice"][2], load=False)
    assert report.ok, str(report)


# ---------------------------------------------------------------------------- the command
def test_cli_sign_verify_and_inspect(tabular_bundle, bundle_copy, keys, capsys):
    copy = bundle_copy(tabular_bundle[0])
    digest = tabular_bundle[1].digest
    assert main(["inspect", str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"digest    {digest}" in out and "signed    no\n" in out
    assert main(["sign", str(copy), "--key", str(keys["alice"][1])]) == 0
    assert f"(digest {digest}): {copy / 'model.sig'}" in capsys.readouterr().out
    assert main(["inspect", str(copy)]) == 0
    assert f"signed    by key {key_hint(keys['alice'][2])} (model.sig;" in capsys.readouterr().out
    assert main(["inspect", str(copy), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["signature"] == {
        "file": "model.sig",
        "kind": "key",
        "signer": f"key {key_hint(keys['alice'][2])}",
    }
    args = ["verify", str(copy), "--no-load", "--digest", digest]
    assert main([*args, "--public-key", str(keys["alice"][2])]) == 0
    out = capsys.readouterr().out
    assert "PASS  digest" in out and "PASS  signature: model.sig signed by key" in out
    assert main([*args, "--public-key", str(keys["mallory"][2])]) == 1
    assert "FAIL  signature: The signature model.sig" in capsys.readouterr().out
