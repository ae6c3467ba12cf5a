"""An OCI distribution API client: one registry, its blobs, manifests, tags and referrers,
and the credentials and authentication that registry clients use.

Credentials, in order: ``username=``/``password=``, the ``KERAS_BUNDLE_REGISTRY_USERNAME``
and ``KERAS_BUNDLE_REGISTRY_PASSWORD`` environment variables, then the files registry
clients write (``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``: ``auths`` entries and
``credHelpers``/``credsStore`` helpers). Basic and bearer-token (``WWW-Authenticate:
Bearer realm=...``) authentication are both spoken. HTTPS always, except for loopback hosts
(``localhost``, ``127.0.0.1``, ``[::1]``) that do not speak TLS, ``plain_http=True``, or a
registry listed in ``$KERAS_BUNDLE_PLAIN_HTTP_REGISTRIES`` (``host:port,...``).

Failures are translated here: a registry that cannot be reached or refuses the credentials
is a `RegistryError` naming the registry, the user and where the credentials came from
(never the password); a missing repository or tag is a `BundleNotFoundError`; bytes that do
not match their digest are an `IntegrityError`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import json
import os
import re
import ssl
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    BundleNotFoundError,
    IntegrityError,
    MissingDependencyError,
    RegistryError,
    UsageError,
    bullet_list,
)
from .local import version_key

SCHEME = "oci://"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
USERNAME_ENV = "KERAS_BUNDLE_REGISTRY_USERNAME"
PASSWORD_ENV = "KERAS_BUNDLE_REGISTRY_PASSWORD"
PLAIN_HTTP_ENV = "KERAS_BUNDLE_PLAIN_HTTP_REGISTRIES"  # comma-separated host[:port]s
TIMEOUT_SECONDS = 60.0
# Docker Hub is named docker.io, served from registry-1.docker.io, and logged in to as
# https://index.docker.io/v1/ in auth files.
DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
CHUNK = 1 << 20
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")

__all__ = [
    "INDEX_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "PASSWORD_ENV",
    "PLAIN_HTTP_ENV",
    "USERNAME_ENV",
    "Registry",
    "check_bytes",
    "json_bytes",
]


# ---------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class _Credentials:
    username: str
    password: str
    source: str  # how messages name where they came from


def _is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker = os.environ.get("DOCKER_CONFIG")
    files.append(
        Path(docker) / "config.json" if docker else Path.home() / ".docker" / "config.json"
    )
    return files


def _auth_key(key: str) -> str:
    """``https://host:port/v1/`` -> ``host:port``: how auth files name a registry."""
    text = key.split("://", 1)[-1]
    return text.split("/", 1)[0]


def _same_registry(a: str, b: str) -> bool:
    return a == b or (a in DOCKER_HUB and b in DOCKER_HUB)


def _credentials(registry: str, options: Mapping[str, Any]) -> _Credentials | None:
    username, password = options.get("username"), options.get("password")
    if username is not None or password is not None:
        return _Credentials(str(username or ""), str(password or ""), "username=/password=")
    if os.environ.get(USERNAME_ENV) or os.environ.get(PASSWORD_ENV):
        return _Credentials(
            os.environ.get(USERNAME_ENV, ""),
            os.environ.get(PASSWORD_ENV, ""),
            f"${USERNAME_ENV}/${PASSWORD_ENV}",
        )
    for path in _auth_files():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
        for key, entry in (config.get("auths") or {}).items():
            if not _same_registry(_auth_key(key), registry) or not isinstance(entry, Mapping):
                continue
            if entry.get("auth"):
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
                return _Credentials(user, secret, str(path))
            if entry.get("username"):
                return _Credentials(entry["username"], entry.get("password", ""), str(path))
        if helper:
            found = _from_helper(str(helper), registry)
            if found is not None:
                return found
    return None


def _from_helper(helper: str, registry: str) -> _Credentials | None:
    """Ask a Docker credential helper (``docker-credential-<helper> get``)."""
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"], input=registry, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return None
    return _Credentials(answer.get("Username", ""), answer.get("Secret", ""), program)


# Loopback registries found to speak plain HTTP, so later clients skip the TLS attempt.
_PLAIN_LOOPBACK: dict[str, str] = {}


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (httpx's default one: certifi's roots, or
    ``$SSL_CERT_FILE``): loading a CA store takes ~0.1 s, too much to pay again for every
    registry client (a Spark executor opens one per load)."""
    import httpx

    return httpx.create_ssl_context()


# ---------------------------------------------------------------------------- the client
class Registry:
    """One registry, spoken to over the OCI distribution API (httpx), with its auth."""

    def __init__(self, registry: str, **options: Any):
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError(
                "OCI registries need httpx. Install it with: pip install 'keras-bundle[oci]'",
                package="httpx",
                extra="oci",
            ) from exc
        unknown = set(options) - {"username", "password", "plain_http", "timeout"}
        if unknown:
            raise UsageError(
                f"Unknown option(s) for an OCI location: {', '.join(sorted(unknown))}; "
                "it takes username=, password=, plain_http= and timeout=."
            )
        self.registry = registry
        self._host = "registry-1.docker.io" if registry in DOCKER_HUB else registry
        self._httpx = httpx
        self._client = httpx.Client(
            timeout=float(options.get("timeout") or TIMEOUT_SECONDS),
            follow_redirects=True,
            verify=_tls_context(),
        )
        allowed = os.environ.get(PLAIN_HTTP_ENV, "").replace(" ", "").split(",")
        self._plain = bool(options.get("plain_http")) or registry in allowed
        self._scheme = "http" if self._plain else _PLAIN_LOOPBACK.get(registry, "https")
        self._credentials = _credentials(registry, options)
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._missing: list[str] = []  # the error codes of the last manifest not found

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -------------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | Callable[[], Iterator[bytes]] | None = None,
        stream: bool = False,
    ) -> Any:
        """One request, authenticated on demand; `path` is below ``/v2/`` or a full URL.

        `content` may be a callable returning a fresh iterator, so a body can be sent again
        after an authentication challenge.
        """
        for _attempt in range(3):
            response = self._send(method, path, scope, headers, content, stream)
            if response.status_code != 401:
                return response
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            self._tokens.pop(scope, None)  # an expired token is asked for again, once
            if _attempt == 2 or not self._authenticate(challenge, scope):
                break
        self._refused(response, scope)
        raise AssertionError("unreachable")

    def _send(self, method, path, scope, headers, content, stream):  # type: ignore[no-untyped-def]
        all_headers = dict(headers or {})
        if scope in self._tokens:
            all_headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        elif self._basic and self._credentials is not None:
            all_headers["Authorization"] = self._basic_header()
        body = content() if callable(content) else content
        url = path if "://" in path else f"{self._scheme}://{self._host}/v2/{path}"
        try:
            request = self._client.build_request(method, url, headers=all_headers, content=body)
            return self._client.send(request, stream=stream)
        except self._httpx.ConnectError as exc:
            if self._scheme == "https" and not self._plain and _is_loopback(self.registry):
                # A registry on this machine usually speaks plain HTTP (as Docker allows).
                self._scheme = _PLAIN_LOOPBACK[self.registry] = "http"
                return self._send(
                    method, path.replace("https://", "http://", 1), scope, headers, content, stream
                )
            raise self._unreachable(exc) from exc
        except (self._httpx.TransportError, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> RegistryError:
        hint = (
            " It answers over plain HTTP? Pass plain_http=True (--plain-http)."
            if "SSL" in str(exc) or "TLS" in str(exc)
            else ""
        )
        return RegistryError(
            f"Could not reach the registry {self.registry}: {type(exc).__name__}: {exc}.\n"
            f"Check that it is running and reachable from here.{hint}",
            registry=self.registry,
        )

    def _basic_header(self) -> str:
        assert self._credentials is not None
        pair = f"{self._credentials.username}:{self._credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _authenticate(self, challenge: str, scope: str) -> bool:
        """Answer a ``WWW-Authenticate`` challenge; False if there is nothing new to try."""
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if self._credentials is None or self._basic:
                return False
            self._basic = True
            return True
        if kind.lower() != "bearer":
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            return False
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        headers = {"Authorization": self._basic_header()} if self._credentials else {}
        try:
            answer = self._client.get(fields["realm"], params=query, headers=headers)
        except (self._httpx.TransportError, OSError) as exc:
            raise self._unreachable(exc) from exc
        if answer.status_code != 200:
            self._refused(answer, scope, at=fields["realm"])
        token = answer.json().get("token") or answer.json().get("access_token")
        if not token:
            return False
        self._tokens[scope] = token
        return True

    def _refused(self, response: Any, scope: str, at: str | None = None) -> None:
        action = "push to" if "push" in scope else "pull from"
        repository = scope.split(":")[1] if scope.count(":") >= 2 else scope
        status = response.status_code
        detail = _error_text(response)
        where = f" (token service {at})" if at else ""
        if self._credentials is None:
            raise RegistryError(
                f"The registry {self.registry} needs credentials to {action} {repository}: "
                f"HTTP {status}{where}{detail}.\nPass username=/password= (--username, "
                f"--password-stdin), set ${USERNAME_ENV} and ${PASSWORD_ENV}, or log in with "
                f"`docker login {self.registry}`.",
                registry=self.registry,
                status=status,
            )
        raise RegistryError(
            f"The registry {self.registry} refused the credentials of user "
            f"{self._credentials.username!r} (from {self._credentials.source}) to {action} "
            f"{repository}: HTTP {status}{where}{detail}.\n"
            "Check the user name and password, and that the user may access that repository.",
            registry=self.registry,
            status=status,
        )

    def check(self, response: Any, what: str, *, expected: tuple[int, ...] = (200,)) -> Any:
        """`response` if its status is expected, else a `RegistryError` saying what failed."""
        if response.status_code in expected:
            return response
        if response.status_code >= 500:
            reason = "the registry failed (a server error)"
        else:
            reason = "the registry refused it"
        raise RegistryError(
            f"{what} at {self.registry}: HTTP {response.status_code}{_error_text(response)}; "
            f"{reason}.\nRetry; if it persists, check the registry's logs.",
            registry=self.registry,
            status=response.status_code,
        )

    # -------------------------------------------------------------------- blobs
    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"{repository}/blobs/{digest}", scope=_push(repository))
        response.close()
        return response.status_code == 200

    def put_blob(
        self, repository: str, digest: str, size: int, content: Callable[[], Iterator[bytes]]
    ) -> None:
        """Upload one blob monolithically (POST a session, PUT the bytes with the digest)."""
        scope = _push(repository)
        started = self.check(
            self.request("POST", f"{repository}/blobs/uploads/", scope=scope),
            f"Starting an upload to {repository}",
            expected=(202,),
        )
        location = started.headers["location"]
        if "://" not in location:
            location = f"{self._scheme}://{self._host}{location}"
        url = str(self._httpx.URL(location).copy_merge_params({"digest": digest}))
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self.check(
            self.request("PUT", url, scope=scope, headers=headers, content=content),
            f"Uploading blob {digest[:19]} to {repository}",
            expected=(201,),
        )

    def iter_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        """A blob's bytes in chunks of at most 1 MiB, streamed (not checked: the caller
        hashes them as they come); a broken-off download is a `RegistryError`."""
        response = self._get_blob(repository, digest)
        try:
            yield from response.iter_bytes(CHUNK)
        except (self._httpx.TransportError, OSError) as exc:
            raise RegistryError(
                f"The download of blob {digest[:19]} from {self.registry}/{repository} "
                f"broke off: {type(exc).__name__}: {exc}.\nRetry.",
                registry=self.registry,
            ) from exc
        finally:
            response.close()

    def _get_blob(self, repository: str, digest: str) -> Any:
        """A streamed response for a blob (close it); 404 raises `BundleNotFoundError`."""
        response = self.request(
            "GET", f"{repository}/blobs/{digest}", scope=_pull(repository), stream=True
        )
        if response.status_code == 404:
            response.close()
            raise BundleNotFoundError(
                f"The registry {self.registry} has no blob {digest} in {repository}: the "
                "artifact refers to content that was deleted.\nPush the bundle again.",
                location=f"{SCHEME}{self.registry}/{repository}",
            )
        if response.status_code != 200:
            response.read()
        return self.check(response, f"Downloading blob {digest[:19]} from {repository}")

    def read_blob(self, repository: str, digest: str, *, limit: int = 64 << 20) -> bytes:
        """A small blob's bytes, checked against its digest."""
        data = b""
        chunks = self.iter_blob(repository, digest)
        for chunk in chunks:
            data += chunk
            if len(data) > limit:
                chunks.close()
                raise IntegrityError(
                    f"Blob {digest} in {self.registry}/{repository} is larger than "
                    f"{limit:,} bytes, more than a manifest or signature can be."
                )
        check_bytes(data, digest, f"blob of {self.registry}/{repository}")
        return data

    # -------------------------------------------------------------------- manifests
    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """``(bytes, digest, media type)`` of a manifest, checked against its digest.

        Raises:
            BundleNotFoundError: no such manifest (the message lists the tags there).
        """
        found = self.find_manifest(repository, reference)
        if found is None:
            raise BundleNotFoundError(
                self._not_found(repository, reference),
                location=f"{SCHEME}{self.registry}/{repository}",
            )
        return found

    def find_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """`get_manifest`, or None when there is no such manifest."""
        accept = ", ".join([MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE])
        response = self.request(
            "GET",
            f"{repository}/manifests/{reference}",
            scope=_pull(repository),
            headers={"Accept": accept},
        )
        if response.status_code == 404:
            self._missing = _error_codes(response)
            return None
        self.check(response, f"Reading the manifest {repository}:{reference}")
        data = response.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        claimed = (
            reference
            if DIGEST_PATTERN.match(reference)
            else response.headers.get("docker-content-digest")
        )
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(
                f"The manifest {self.registry}/{repository}@{claimed} the registry sent has "
                f"digest {digest}: it was changed in the registry or on the way.\n"
                "Do not use it; push the bundle again from a verified copy."
            )
        return data, digest, response.headers.get("content-type", "").split(";")[0]

    def _not_found(self, repository: str, reference: str) -> str:
        if "NAME_UNKNOWN" in self._missing:
            return f"The registry {self.registry} has no repository {repository!r}."
        try:
            tags = self.tags(repository)
        except (RegistryError, BundleNotFoundError):
            tags = []
        shown = [t for t in tags if not t.startswith("sha256-")]
        listing = f"\nTags there:\n{bullet_list(reversed(sorted(shown, key=version_key)))}"
        return f"No {reference!r} in {self.registry}/{repository}." + (listing if shown else "")

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Any:
        response = self.request(
            "PUT",
            f"{repository}/manifests/{reference}",
            scope=_push(repository),
            headers={"Content-Type": media_type},
            content=data,
        )
        return self.check(
            response, f"Writing the manifest {repository}:{reference}", expected=(201,)
        )

    def tags(self, repository: str) -> list[str]:
        """Every tag of a repository (following the ``Link`` pages)."""
        found: list[str] = []
        path = f"{repository}/tags/list?n=1000"
        while path:
            response = self.request("GET", path, scope=_pull(repository))
            if response.status_code == 404:
                raise BundleNotFoundError(
                    f"The registry {self.registry} has no repository {repository!r}.",
                    location=f"{SCHEME}{self.registry}/{repository}",
                )
            self.check(response, f"Listing the tags of {repository}")
            found += response.json().get("tags") or []
            link = re.match(r"<([^>]+)>", response.headers.get("link", ""))
            path = ""
            if link:
                target = link.group(1)
                path = target[len("/v2/") :] if target.startswith("/v2/") else target
        return found

    # -------------------------------------------------------------------- referrers
    def referrers(self, repository: str, digest: str, artifact_type: str) -> list[dict[str, Any]]:
        """Descriptors of the artifacts that refer to `digest`: the OCI 1.1 referrers API,
        or the ``sha256-<hex>`` tag-scheme fallback index on registries without it."""
        response = self.request(
            "GET",
            f"{repository}/referrers/{digest}?artifactType={artifact_type}",
            scope=_pull(repository),
            headers={"Accept": INDEX_MEDIA_TYPE},
        )
        if response.status_code == 200 and response.headers.get("content-type", "").startswith(
            INDEX_MEDIA_TYPE
        ):
            manifests = response.json().get("manifests") or []
        else:
            response.close()
            index = self._fallback_index(repository, digest)
            manifests = index.get("manifests", []) if index else []
        return [m for m in manifests if m.get("artifactType") == artifact_type]

    def _fallback_index(self, repository: str, digest: str) -> dict[str, Any] | None:
        found = self.find_manifest(repository, _fallback_tag(digest))
        return json.loads(found[0]) if found is not None else None

    def add_referrer(
        self, repository: str, subject: str, data: bytes, descriptor: dict[str, Any]
    ) -> None:
        """Put a referrer manifest; keep the fallback index when the registry does not.

        A registry that processes ``subject`` answers with an ``OCI-Subject`` header; any
        other one gets the descriptor added to the ``sha256-<hex>`` index tag.
        """
        response = self.put_manifest(repository, descriptor["digest"], data, MANIFEST_MEDIA_TYPE)
        if response.headers.get("oci-subject"):
            return
        index = self._fallback_index(repository, subject) or {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [],
        }
        kept = [m for m in index["manifests"] if m.get("digest") != descriptor["digest"]]
        index["manifests"] = [*kept, descriptor]
        self.put_manifest(repository, _fallback_tag(subject), json_bytes(index), INDEX_MEDIA_TYPE)


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _fallback_tag(digest: str) -> str:
    return digest.replace(":", "-", 1)


def _error_codes(response: Any) -> list[str]:
    try:
        return [str(e.get("code")) for e in response.json().get("errors", [])]
    except (ValueError, AttributeError):
        return []


def _error_text(response: Any) -> str:
    try:
        errors = response.json().get("errors", [])
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return f" ({text})" if text else ""


def json_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def check_bytes(data: bytes, digest: str, what: str) -> None:
    found = "sha256:" + hashlib.sha256(data).hexdigest()
    if found != digest:
        raise IntegrityError(
            f"The {what} should have digest {digest}, but the bytes received have {found}: "
            "it was changed in the registry or on the way.\nDo not use it; push the bundle "
            "again from a verified copy."
        )
