"""Bundles in OCI registries: a real CNCF Distribution registry (Debian's docker-registry)
started on 127.0.0.1, our client, and ORAS's Python SDK as a second, independent client.

Faults are forced for real: the registry killed with SIGKILL in the middle of a push, a
blob changed in the registry's storage, wrong credentials against an htpasswd registry, a
pinned digest that is another bundle's.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ec_key_pair, free_port, model_signing_key, run_python

import bundle
from bundle import (
    Bundle,
    BundleNotFoundError,
    DigestMismatchError,
    IntegrityError,
    RegistryError,
    UnsupportedFormatError,
    UsageError,
)
from bundle.cli import main
from bundle.storage import oci
from bundle.storage import registry as registry_client

REGISTRY_BINARY = shutil.which("docker-registry")
pytestmark = pytest.mark.skipif(
    REGISTRY_BINARY is None,
    reason="docker-registry (CNCF Distribution) is not installed: `make registry` installs "
    "Debian's docker-registry package",
)


class RegistryProcess:
    """`docker-registry serve` on 127.0.0.1 with its storage in `root` (kept across restarts)."""

    def __init__(self, root: Path, *, htpasswd: Path | None = None, token: dict | None = None):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        auth = ""
        if htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n"
        if token is not None:
            auth = "auth:\n  token:\n" + "".join(f"    {k}: {v}\n" for k, v in token.items())
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: {self.address}\n{auth}"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> RegistryProcess:
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115  (kept by the process)
        self.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2):
                    return self
            except urllib.error.HTTPError:  # 401 from an auth registry: it is up
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError((self.root / "registry.log").read_text(errors="replace"))
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything in flight."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def blob_path(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return (
            self.root / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """An open registry for the module; yields ``127.0.0.1:<port>``."""
    server = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache, and none of this machine's registry credentials."""
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    for name in (
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        registry_client.USERNAME_ENV,
        registry_client.PASSWORD_ENV,
        registry_client.PLAIN_HTTP_ENV,
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory):
    """An EC P-256 key pair in PEM files: (private, public)."""
    return ec_key_pair(tmp_path_factory.mktemp("keys"), "release")[1:]


@pytest.fixture
def signed_copy(tabular_bundle, bundle_copy, signing_keys):
    """A copy of the tabular bundle, signed (model.sig)."""
    copy = bundle_copy(tabular_bundle[0])
    bundle.sign(copy, key=signing_keys[0])
    return copy


def _repo(registry: RegistryProcess, name: str) -> str:
    return f"oci://{registry.address}/tests/{name}"


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------- references
def test_references_parse_and_refuse_with_the_bad_part_named():
    digest = "sha256:" + "a" * 64
    ref = oci.Reference.parse(f"oci://127.0.0.1:5000/team/churn:1.2.0@{digest}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000",
        "team/churn",
        "1.2.0",
        digest,
    )
    assert str(ref) == f"oci://127.0.0.1:5000/team/churn:1.2.0@{digest}"
    assert oci.Reference.parse("oci://localhost/churn").tag is None
    with pytest.raises(UsageError, match=r"invalid part 'Team': repository names are lowercase"):
        oci.Reference.parse("oci://registry.example.com/Team/churn:1")
    with pytest.raises(UsageError, match=r"'sha256:abc' is not a digest"):
        oci.Reference.parse("oci://registry.example.com/churn@sha256:abc")
    with pytest.raises(UsageError, match=r"'-x' is not a valid tag"):
        oci.Reference.parse("oci://registry.example.com/churn:-x")
    with pytest.raises(UsageError, match=r"expected oci://HOST\[:PORT\]/REPOSITORY"):
        oci.Reference.parse("oci://churn")


# ---------------------------------------------------------------------------- round trips
@pytest.mark.slow
def test_push_then_load_by_tag_by_digest_and_by_repository_predicts_exactly(
    registry, tabular_bundle, tabular_data, tmp_path
):
    path, saved = tabular_bundle
    frame, _ = tabular_data
    target = _repo(registry, "churn")
    result = bundle.push(path, target)
    assert result.digest == saved.digest  # the config digest is the bundle digest
    assert result.reference == f"{target}:1.0.0@{result.manifest_digest}"
    assert sorted(result.uploaded) == sorted([*saved.manifest.files, "manifest.json"])
    expected = saved.predict(frame.iloc[:50], postprocess=False)
    np.save(tmp_path / "expected.npy", expected)
    pinned = f"{target}@{result.manifest_digest}"
    assert oci.pin(target + ":1.0.0") == oci.pin(target) == pinned  # what Spark executors load
    # A fresh process with none of the training code, a fresh cache: three ways to name it.
    child = run_python(
        f"""
        import numpy as np, pandas as pd
        from bundle import Bundle
        frame = pd.read_parquet({str(path / "example/input.parquet")!r}).iloc[:50]
        expected = np.load({str(tmp_path / "expected.npy")!r})
        for location in [{target + ":1.0.0"!r}, {pinned!r}, {target!r}]:
            loaded = Bundle.load(location, digest={saved.digest!r})
            got = loaded.predict(frame, postprocess=False)
            assert loaded.digest == {saved.digest!r}
            assert np.abs(got - expected).max() <= 1e-6, np.abs(got - expected).max()
            print("OK", location, loaded.path.parent.name)
        """,
        cwd=tmp_path,
    )
    hexdigest = saved.digest.split(":")[1]
    assert child.stdout.count("OK") == 3
    assert child.stdout.count(f"sha256-{hexdigest}") == 3  # one cache entry per digest


def test_oras_pulls_byte_identical_files_with_modelpack_media_types(
    registry, tabular_bundle, tmp_path
):
    import oras.client

    path, _saved = tabular_bundle
    target = _repo(registry, "interop")
    result = bundle.push(path, target + ":v1")
    client = oras.client.OrasClient(hostname=registry.address, insecure=True)
    pulled = client.pull(target=f"{registry.address}/tests/interop:v1", outdir=str(tmp_path))
    assert len(pulled) == len(_files(path))
    assert _files(tmp_path) == _files(path)  # every file, manifest.json included
    artifact = client.get_manifest(f"{registry.address}/tests/interop@{result.manifest_digest}")
    assert artifact["artifactType"] == oci.ARTIFACT_TYPE
    assert artifact["config"] == {
        "mediaType": oci.CONFIG_MEDIA_TYPE,
        "digest": result.digest,
        "size": artifact["config"]["size"],
    }
    types = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in artifact["layers"]
    }
    assert types["model.keras"] == "application/vnd.cncf.model.weight.v1.raw"
    assert types["steps/000-pre-columntransformer.npz"].startswith(
        "application/vnd.cncf.model.weight.config"
    )
    assert types["README.md"] == "application/vnd.cncf.model.doc.v1.raw"
    assert types["example/input.parquet"] == "application/vnd.cncf.model.dataset.v1.raw"


def test_an_artifact_that_is_not_a_bundle_is_refused_naming_its_config(registry, tmp_path):
    import oras.client

    (tmp_path / "notes.txt").write_text("not a model")
    client = oras.client.OrasClient(hostname=registry.address, insecure=True)
    client.push(
        target=f"{registry.address}/tests/other:1",
        files=[str(tmp_path / "notes.txt")],
        disable_path_validation=True,
    )
    with pytest.raises(UnsupportedFormatError, match=r"is not a keras-bundle artifact: its config"):
        Bundle.load(_repo(registry, "other") + ":1")


def test_a_second_version_uploads_only_what_changed(registry, tabular_bundle, tmp_path):
    path, saved = tabular_bundle
    target = _repo(registry, "dedup")
    bundle.push(path, target)
    # The same model re-released with new metadata: only the manifest is new content.
    again = tmp_path / "1.0.1"
    shutil.copytree(path, again)
    manifest = json.loads((again / "manifest.json").read_text())
    manifest.update(version="1.0.1", metadata={"auc": 0.93})
    (again / "manifest.json").write_text(json.dumps(manifest, indent=2))
    seen = []
    result = bundle.push(again, target, progress=lambda name, size, fresh: seen.append(fresh))
    assert result.uploaded == ["manifest.json"]
    assert sorted(result.skipped) == sorted(saved.manifest.files)
    assert seen.count(True) == 1 and len(seen) == len(saved.manifest.files) + 1
    versions = bundle.list_versions(target)
    assert [v.version for v in versions] == ["1.0.0", "1.0.1"]
    assert versions[0].digest == saved.digest and versions[1].digest == result.digest
    assert Bundle.load(target).manifest.metadata == {"auc": 0.93}  # the highest tag


# ---------------------------------------------------------------------------- signatures
@pytest.mark.slow
def test_a_signed_bundle_carries_its_signature_through_the_registry(
    registry, tabular_bundle, signed_copy, signing_keys, tmp_path
):
    _private, public = signing_keys
    saved, signed = tabular_bundle[1], signed_copy
    target = _repo(registry, "signed") + ":1.0.0"
    result = bundle.push(signed, target)
    assert result.signed
    # Distribution 2.8 has no referrers API: the signature is listed in the fallback tag.
    tags = bundle.list_versions(_repo(registry, "signed"))
    assert [t.version for t in tags] == ["1.0.0"]
    index = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{registry.address}/v2/tests/signed/manifests/"
                + result.manifest_digest.replace(":", "-"),
                headers={"Accept": registry_client.INDEX_MEDIA_TYPE},
            )
        ).read()
    )
    assert [m["artifactType"] for m in index["manifests"]] == [
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    ]
    pulled = bundle.pull(target, tmp_path / "models")
    assert pulled == tmp_path / "models" / "1.0.0"
    assert (pulled / "model.sig").read_bytes() == (signed / "model.sig").read_bytes()
    verified = model_signing_key("verify", pulled, public)
    assert verified.returncode == 0, verified.stderr
    loaded = Bundle.load(target, public_key=public, digest=saved.digest)
    assert loaded.digest == saved.digest


def test_inspect_and_list_show_digest_and_signature_of_an_artifact(
    registry, tabular_bundle, signed_copy, capsys
):
    saved, signed = tabular_bundle[1], signed_copy
    target = _repo(registry, "shown")
    assert main(["push", str(signed), target]) == 0
    out = capsys.readouterr().out
    assert f"digest: {saved.digest}" in out and "signature: attached (referrer)" in out
    assert main(["inspect", target + ":1.0.0", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["digest"] == saved.digest and facts["signed"] is True
    assert facts["signature"]["signer"].startswith("key ")
    assert facts["location"].startswith(f"{target}:1.0.0@sha256:")
    assert main(["list", target]) == 0
    assert saved.digest[:19] in capsys.readouterr().out


# ---------------------------------------------------------------------------- faults
def test_a_tampered_blob_is_refused_naming_the_file_and_nothing_is_cached(
    tmp_path_factory, tabular_bundle, tmp_path
):
    path, saved = tabular_bundle
    server = RegistryProcess(tmp_path_factory.mktemp("tampered")).start()
    try:
        target = f"oci://{server.address}/tests/churn:1.0.0"
        bundle.push(path, target)
        blob = server.blob_path("sha256:" + saved.manifest.files["model.keras"]["sha256"])
        data = bytearray(blob.read_bytes())
        data[100] ^= 0xFF
        blob.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=r"model\.keras from .* does not match its digest"):
            Bundle.load(target)
        cached = tmp_path / "cache" / "oci" / "bundles" / saved.digest.replace(":", "-")
        assert [p.name for p in cached.iterdir() if not p.name.startswith(".")] == []
    finally:
        server.stop()


def test_a_pinned_digest_of_another_bundle_is_refused_before_any_file_is_downloaded(
    registry, tabular_bundle, tmp_path
):
    path, saved = tabular_bundle
    target = _repo(registry, "pinned") + ":1.0.0"
    bundle.push(path, target)
    other = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError, match=r"not the pinned sha256:0000") as caught:
        Bundle.load(target, digest=other, trusted=True)
    assert (caught.value.expected, caught.value.found) == (other, saved.digest)
    assert not (tmp_path / "cache" / "oci" / "bundles").exists()


def test_a_manifest_changed_in_the_registry_is_refused_by_its_digest(
    tmp_path_factory, tabular_bundle
):
    path, _saved = tabular_bundle
    server = RegistryProcess(tmp_path_factory.mktemp("manifest")).start()
    try:
        result = bundle.push(path, f"oci://{server.address}/tests/churn:1.0.0")
        stored = server.blob_path(result.manifest_digest)
        stored.write_bytes(stored.read_bytes().replace(b'"1.0.0"', b'"6.6.6"'))
        with pytest.raises(IntegrityError, match=r"the registry sent has digest"):
            Bundle.load(f"oci://{server.address}/tests/churn@{result.manifest_digest}")
    finally:
        server.stop()


@pytest.mark.slow
def test_registry_killed_mid_push_leaves_no_tag_and_a_retry_resumes(
    tmp_path_factory, tabular_bundle
):
    path, saved = tabular_bundle
    server = RegistryProcess(tmp_path_factory.mktemp("killed")).start()
    target = f"oci://{server.address}/tests/churn:1.0.0"
    done = []

    def kill_after_two(name, size, fresh):
        done.append(name)
        if len(done) == 2:
            server.kill()

    try:
        with pytest.raises(RegistryError, match=rf"Could not reach the registry {server.address}"):
            bundle.push(path, target, progress=kill_after_two)
        server.start()  # the same storage, the same port
        with pytest.raises(BundleNotFoundError, match=r"has no repository|No '1\.0\.0'"):
            Bundle.load(target)
        result = bundle.push(path, target)
        assert set(done) <= set(result.skipped)  # what made it before the kill is kept
        assert len(result.uploaded) == len(saved.manifest.files) + 1 - len(done)
        assert Bundle.load(target).digest == saved.digest
    finally:
        server.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """A registry with htpasswd (bcrypt) auth: user alice, password wonderland."""
    import bcrypt

    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    hashed = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    server = RegistryProcess(root, htpasswd=htpasswd).start()
    yield server
    server.stop()


def test_wrong_or_missing_credentials_are_refused_with_the_user_named(
    auth_registry, tabular_bundle
):
    path, _saved = tabular_bundle
    target = f"oci://{auth_registry.address}/tests/churn"
    with pytest.raises(RegistryError, match=r"refused the credentials of user 'alice'") as caught:
        bundle.push(path, target, username="alice", password="looking-glass")
    assert caught.value.status == 401 and "looking-glass" not in str(caught.value)
    with pytest.raises(RegistryError, match=r"needs credentials to pull from tests/churn"):
        Bundle.load(target + ":1.0.0")


def test_credentials_come_from_the_docker_config_and_the_environment(
    auth_registry, tabular_bundle, tmp_path, monkeypatch
):
    path, saved = tabular_bundle
    target = f"oci://{auth_registry.address}/tests/creds:1.0.0"
    config = tmp_path / "docker-config"
    config.mkdir()
    token = base64.b64encode(b"alice:wonderland").decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {f"https://{auth_registry.address}": {"auth": token}}})
    )
    assert bundle.push(path, target).digest == saved.digest
    (config / "config.json").unlink()
    monkeypatch.setenv(registry_client.USERNAME_ENV, "alice")
    monkeypatch.setenv(registry_client.PASSWORD_ENV, "wonderland")
    assert Bundle.load(target).digest == saved.digest


def test_cli_push_and_pull_with_password_on_stdin(auth_registry, tabular_bundle, tmp_path):
    path, saved = tabular_bundle
    target = f"oci://{auth_registry.address}/tests/cli:1.0.0"
    env = {**os.environ, "KERAS_BUNDLE_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "bundle.cli"]
    pushed = subprocess.run(
        [*command, "push", str(path), target, "--username", "alice", "--password-stdin"],
        input="wonderland\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert f"digest: {saved.digest}" in pushed.stdout
    wrong = subprocess.run(
        [
            *command,
            "pull",
            target,
            str(tmp_path / "models"),
            "--username",
            "alice",
            "--password-stdin",
        ],
        input="nope\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("Error: The registry") and "Traceback" not in wrong.stderr
    pulled = subprocess.run(
        [
            *command,
            "pull",
            target,
            str(tmp_path / "models"),
            "--digest",
            saved.digest,
            "--username",
            "alice",
            "--password-stdin",
        ],
        input="wonderland\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert _files(tmp_path / "models" / "1.0.0") == _files(path)


class _TokenService:
    """A bearer-token service as Docker Hub and GHCR run one: it checks basic credentials
    and answers a JWT (ES256, signed by a certificate the registry trusts) granting the
    requested repository actions. The registry itself only verifies tokens."""

    def __init__(self, folder: Path, *, service: str, issuer: str):
        import datetime
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = folder / "token-signer.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.service, self.issuer, self.requests = service, issuer, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                expected = "Basic " + base64.b64encode(b"alice:wonderland").decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(b'{"details": "bad credentials"}')
                    return
                from urllib.parse import parse_qs, urlparse

                scope = parse_qs(urlparse(self.path).query).get("scope", [""])[0]
                body = json.dumps({"token": outer.token(scope)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        _kind, name, actions = scope.split(":")
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": [{"type": "repository", "name": name, "actions": actions.split(",")}],
        }
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    """A registry that takes only bearer tokens from `_TokenService` (user alice)."""
    root = tmp_path_factory.mktemp("token-registry")
    tokens = _TokenService(root, service="keras-bundle-tests", issuer="keras-bundle-issuer")
    server = RegistryProcess(
        root,
        token={
            "realm": tokens.realm,
            "service": tokens.service,
            "issuer": tokens.issuer,
            "rootcertbundle": tokens.bundle,
        },
    ).start()
    yield server, tokens
    server.stop()
    tokens.stop()


def test_bearer_token_auth_against_a_token_service(token_registry, tabular_bundle):
    server, tokens = token_registry
    path, saved = tabular_bundle
    target = f"oci://{server.address}/tests/token:1.0.0"
    result = bundle.push(path, target, username="alice", password="wonderland")
    assert result.digest == saved.digest
    asked = [r for r in tokens.requests if "scope=repository%3Atests%2Ftoken" in r]
    assert asked and all("service=keras-bundle-tests" in r for r in asked)
    loaded = Bundle.load(target, username="alice", password="wonderland")
    assert loaded.digest == saved.digest
    with pytest.raises(
        RegistryError, match=r"refused the credentials of user 'alice' .*token service"
    ):
        Bundle.load(target, username="alice", password="queen-of-hearts")
