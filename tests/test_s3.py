"""Bundles on object storage: a real S3 API (moto's server on 127.0.0.1) through s3fs.

The same calls as on the local disk (save, list_versions, load, tag, archive, verify) with
an ``s3://`` root, plus what object storage makes different: no rename, so a version is
claimed and its manifest uploaded last; listings cached by the client; downloads cached
locally. ``memory://`` (fsspec's in-process filesystem) is covered at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from conftest import free_port

import bundle
from bundle import (
    Bundle,
    BundleError,
    BundleNotFoundError,
    IntegrityError,
    VersionExistsError,
)

BUCKET = "bundles"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _wait_until_up(url: str, server: subprocess.Popen, log, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"moto's S3 server did not answer at {url}:\n{output}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server in its own process on 127.0.0.1; yields its URL."""
    url = f"http://127.0.0.1:{free_port()}"
    port = url.rsplit(":", 1)[1]
    log = tempfile.TemporaryFile()  # noqa: SIM115  (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_up(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    """`storage_options` for the bucket `BUCKET` on the server (dummy credentials)."""
    import boto3

    with pytest.MonkeyPatch.context() as env:
        # Dummy credentials, also for boto3 and child processes; never a real account.
        for name, value in {**CREDENTIALS, "AWS_DEFAULT_REGION": REGION}.items():
            env.setenv(name, value)
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield {
            "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": REGION},
        }


def unique_prefix(label: str) -> str:
    """A fresh key prefix in the bucket, so tests never see each other's objects."""
    return f"s3://{BUCKET}/{re.sub(r'[^a-z0-9-]', '-', label.lower())[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def s3_root(request):
    return f"{unique_prefix(request.node.name)}/churn"


@pytest.fixture
def fs(s3):
    import s3fs

    return s3fs.S3FileSystem(**s3)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Downloads and extracted archives go to this test's own cache."""
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))


def _churn(tabular_parts, tabular_data, **kwargs) -> Bundle:
    """An unsaved tabular bundle: the same model and steps as the `tabular_bundle` fixture."""
    preprocess, labels, model = tabular_parts
    frame, _ = tabular_data
    return Bundle(
        model,
        preprocess=preprocess,
        postprocess=labels,
        input_example=frame.iloc[:100],
        name="churn",
        **kwargs,
    )


@pytest.fixture(scope="module")
def s3_churn(s3, tabular_parts, tabular_data):
    """The tabular bundle saved twice, without a version, to a new root in the bucket."""
    root = f"{unique_prefix('churn')}/churn"
    first = _churn(tabular_parts, tabular_data).save(root, **s3)
    second = _churn(tabular_parts, tabular_data).save(root, **s3)
    return root, [first, second]


def _keys(fs, url: str) -> list[str]:
    prefix = url.removeprefix("s3://").rstrip("/") + "/"
    return sorted(path.removeprefix(prefix) for path in fs.find(prefix))


# ---------------------------------------------------------------------------- the release cycle
def test_saves_without_a_version_are_numbered(s3, s3_churn, fs, tabular_bundle):
    root, locations = s3_churn
    assert locations == [f"{root}/1", f"{root}/2"]
    assert all(isinstance(location, str) for location in locations)
    local, _ = tabular_bundle
    files = sorted(json.loads((local / "manifest.json").read_text())["files"])
    keys = _keys(fs, root)
    for version in ("1", "2"):
        # the manifest, and the files under the generation its bytes name
        manifest = fs.cat_file(f"{root}/{version}/manifest.json")
        generation = ".gen-" + hashlib.sha256(manifest).hexdigest()[:16]
        assert sorted(k.split("/", 1)[1] for k in keys if k.startswith(f"{version}/")) == sorted(
            [*(f"{generation}/{name}" for name in files), "manifest.json"]
        )
    assert [k for k in keys if not k.startswith(("1/", "2/"))] == []  # no claims left behind

    infos = bundle.list_versions(root, **s3)
    assert [info.version for info in infos] == ["1", "2"]
    assert [info.location for info in infos] == locations
    for info in infos:
        manifest = json.loads(fs.cat_file(f"{info.location}/manifest.json"))
        assert manifest["version"] == info.version
        assert info.created == manifest["created"]
        assert info.size == sum(entry["size"] for entry in manifest["files"].values())


def test_load_highest_explicit_version_and_alias(
    s3, s3_churn, tabular_bundle, tabular_data, tmp_path
):
    root, _ = s3_churn
    frame, _ = tabular_data
    local = Bundle.load(tabular_bundle[0])
    expected_scores = local.predict(frame, postprocess=False)
    expected_labels = list(local.predict(frame))

    highest = Bundle.load(root, **s3)
    assert (highest.name, highest.version) == ("churn", "2")
    assert highest.path.is_relative_to(tmp_path / "cache" / "remote")
    explicit = Bundle.load(root, version="1", **s3)
    assert explicit.version == "1"
    assert Bundle.load(f"{root}/1", **s3).version == "1"  # a version's own URL
    for loaded in (highest, explicit):
        np.testing.assert_allclose(
            loaded.predict(frame, postprocess=False), expected_scores, atol=1e-6
        )
        assert list(loaded.predict(frame)) == expected_labels
        assert loaded.verify()

    alias = f"prod-{uuid.uuid4().hex[:6]}"
    record = bundle.tag(root, alias, "1", **s3)
    assert record["version"] == "1"
    assert Bundle.load(f"{root}@{alias}", **s3).version == "1"
    assert Bundle.load(root, version=alias, **s3).version == "1"
    moved = bundle.tag(root, alias, "2", **s3)
    assert [entry["version"] for entry in moved["history"]] == ["1", "2"]
    assert Bundle.load(f"{root}@{alias}", **s3).version == "2"
    assert [info.aliases for info in bundle.list_versions(root, **s3)] == [(), (alias,)]

    with pytest.raises(
        BundleNotFoundError,
        match=rf"No version or alias 'staging' under {re.escape(root)}\.\nVersions there:\n"
        rf"- 2\n- 1\nAliases there:\n- {alias}$",
    ):
        Bundle.load(f"{root}@staging", **s3)
    with pytest.raises(BundleNotFoundError, match=r"Cannot tag 'staging': no version '3' under"):
        bundle.tag(root, "staging", "3", **s3)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_archive_to_a_bucket_and_load_it(s3, s3_churn, fs, tabular_data, tmp_path, fmt):
    root, _ = s3_churn
    frame, _ = tabular_data
    url = f"{unique_prefix('releases')}/churn.{fmt}"
    assert bundle.archive(root, url, **s3) == url

    # byte-identical to the same release written locally
    local = bundle.archive(root, tmp_path / f"churn.{fmt}", version="2", **s3)
    assert fs.cat_file(url) == local.read_bytes()

    loaded = Bundle.load(url, **s3)
    assert (loaded.name, loaded.version) == ("churn", "2")
    assert loaded.path.is_relative_to(tmp_path / "cache" / "archives")
    np.testing.assert_allclose(
        loaded.predict(frame, postprocess=False),
        Bundle.load(root, **s3).predict(frame, postprocess=False),
        atol=1e-6,
    )
    assert bundle.verify(url, **s3)


def test_an_existing_version_is_refused(s3, s3_churn, fs, tabular_parts, tabular_data):
    root, _ = s3_churn
    before = fs.cat_file(f"{root}/2/manifest.json")
    with pytest.raises(VersionExistsError) as caught:
        _churn(tabular_parts, tabular_data, version="2").save(root, **s3)
    assert str(caught.value) == (
        f"Version '2' already exists under {root}; published versions are immutable.\n"
        "Save under a new version, or pass overwrite=True to replace it."
    )
    assert caught.value.version == "2"
    assert fs.cat_file(f"{root}/2/manifest.json") == before  # untouched
    assert [info.version for info in bundle.list_versions(root, **s3)] == ["1", "2"]


def test_an_explicit_version_is_saved_under_its_name(s3, s3_root, tiny_model, fs):
    location = Bundle(tiny_model, name="churn", version="1.2.0").save(s3_root, **s3)
    assert location == f"{s3_root}/1.2.0"
    assert Bundle.load(s3_root, **s3).version == "1.2.0"
    assert Bundle(tiny_model, name="churn").save(s3_root, **s3) == f"{s3_root}/1"
    # "1.2.0" is a higher version than "1": semver order, as on the local disk
    assert [i.version for i in bundle.list_versions(s3_root, **s3)] == ["1", "1.2.0"]


def test_a_bucket_copy_has_the_digest_of_the_saved_bundle(s3, s3_root, tiny_model, tmp_path):
    saved = Bundle(tiny_model, name="churn", version="1.2.0")
    saved.save(s3_root, **s3)
    assert [i.digest for i in bundle.list_versions(s3_root, **s3)] == [saved.digest]
    assert Bundle.load(s3_root, digest=saved.digest, **s3).digest == saved.digest
    pulled = bundle.pull(s3_root, tmp_path / "models", digest=saved.digest, **s3)
    assert pulled == tmp_path / "models" / "1.2.0"
    assert Bundle.load(pulled).digest == saved.digest


# ---------------------------------------------------------------------------- atomicity
def test_a_version_without_its_manifest_is_invisible(s3, s3_root, tiny_model, fs, tmp_path):
    """An upload that stopped before the manifest (which goes last) publishes nothing."""
    first = Bundle(tiny_model, name="churn").save(s3_root, **s3)
    copy = tmp_path / "copy"
    shutil.copytree(Bundle.load(first, **s3).path, copy)
    uploaded = []
    for file in sorted(p for p in copy.rglob("*") if p.is_file()):
        relative = file.relative_to(copy).as_posix()
        if relative != "manifest.json":
            fs.put_file(str(file), f"{s3_root}/2/{relative}")
            uploaded.append(relative)
    assert "model.keras" in uploaded and "manifest.json" not in _keys(fs, f"{s3_root}/2")

    assert [info.version for info in bundle.list_versions(s3_root, **s3)] == ["1"]
    assert Bundle.load(s3_root, **s3).version == "1"
    with pytest.raises(
        BundleNotFoundError, match=r"alias '2' under s3://.*churn\.\nVersions there:\n- 1$"
    ):
        Bundle.load(s3_root, version="2", **s3)
    with pytest.raises(BundleNotFoundError, match=r"holds no published bundle version"):
        Bundle.load(f"{s3_root}/2", **s3)

    # the next save takes the number over and publishes it whole
    assert Bundle(tiny_model, name="churn").save(s3_root, **s3) == f"{s3_root}/2"
    assert Bundle.load(s3_root, **s3).verify()


def test_versions_published_by_another_client_are_seen(s3, s3_root, tiny_model):
    """s3fs caches listings per (process-wide) client; another writer's version must show."""
    Bundle(tiny_model, name="churn").save(s3_root, **s3)
    assert [info.version for info in bundle.list_versions(s3_root, **s3)] == ["1"]
    assert Bundle.load(s3_root, **s3).version == "1"

    # another process, as far as caching goes: a client of its own
    other = Bundle(tiny_model, name="churn", metadata={"by": "other"})
    assert other.save(s3_root, skip_instance_cache=True, **s3) == f"{s3_root}/2"

    assert [info.version for info in bundle.list_versions(s3_root, **s3)] == ["1", "2"]
    assert Bundle.load(s3_root, **s3).metadata["by"] == "other"
    # and the next number this client takes is past the other's
    assert Bundle(tiny_model, name="churn").save(s3_root, **s3) == f"{s3_root}/3"


def _object(fs, location: str, name: str) -> str:
    """The URL of a version's file `name`, under the generation its manifest names."""
    manifest = fs.cat_file(f"{location}/manifest.json")
    return f"{location}/.gen-{hashlib.sha256(manifest).hexdigest()[:16]}/{name}"


def test_a_tampered_object_is_detected(s3, s3_root, tiny_model, fs, tmp_path, monkeypatch):
    location = Bundle(tiny_model, name="churn", version="1.0.0").save(s3_root, **s3)
    model = _object(fs, location, "model.keras")
    original = fs.cat_file(model)
    fs.pipe_file(model, b"tampered")

    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(IntegrityError, match=r"in bundle 'churn' 1\.0\.0 do not match") as caught:
        Bundle.load(s3_root, **s3)
    message = str(caught.value)
    assert re.search(rf"- model\.keras: 8 bytes on disk, {len(original):,} recorded; ", message)
    assert caught.value.mismatched == ["model.keras"]
    report = bundle.verify(s3_root, load=False, **s3)  # a report, not an exception
    assert not report
    assert [(c.name, c.passed) for c in report.checks] == [("files", False)]
    assert "- model.keras: 8 bytes on disk" in report.checks[0].detail

    # once the object is restored, the same cache loads it: a bad download is not kept
    fs.pipe_file(model, original)
    assert Bundle.load(s3_root, **s3).verify()


# ---------------------------------------------------------------------------- memory://
@pytest.fixture
def memory_root():
    import fsspec

    prefix = f"memory://releases-{uuid.uuid4().hex[:8]}"
    yield f"{prefix}/churn"
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(prefix.removeprefix("memory://"), recursive=True)


def test_memory_urls_work_like_a_bucket(memory_root, tiny_model, tmp_path):
    import fsspec

    x = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    first = Bundle(tiny_model, input_example=x, name="churn").save(memory_root)
    second = Bundle(tiny_model, input_example=x, name="churn").save(memory_root)
    assert (first, second) == (f"{memory_root}/1", f"{memory_root}/2")
    assert [info.version for info in bundle.list_versions(memory_root)] == ["1", "2"]
    with pytest.raises(VersionExistsError, match=r"Version '1' already exists under memory://"):
        Bundle(tiny_model, name="churn", version="1").save(memory_root)

    bundle.tag(memory_root, "production", "1")
    loaded = Bundle.load(f"{memory_root}@production")
    assert loaded.version == "1" and loaded.path.is_relative_to(tmp_path / "cache")
    np.testing.assert_allclose(loaded.predict(x), tiny_model.predict(x, verbose=0), atol=1e-6)
    assert loaded.verify()
    assert Bundle.load(memory_root).version == "2"

    url = memory_root.rsplit("/", 1)[0] + "/churn-1.zip"
    assert bundle.archive(f"{memory_root}@production", url) == url
    with fsspec.open(url, "rb") as handle:
        assert handle.read() == bundle.archive(loaded.path, tmp_path / "local.zip").read_bytes()
    assert Bundle.load(url).version == "1"


def test_memory_url_with_nothing_there(memory_root):
    with pytest.raises(BundleNotFoundError, match=r"memory://.* holds no published bundle"):
        Bundle.load(memory_root)
    assert bundle.list_versions(memory_root) == []


@pytest.mark.parametrize("name", ["../../../../escaped.txt", "{tmp_path}/escaped.txt"])
def test_a_remote_manifest_cannot_name_files_outside_the_version(
    memory_root, tiny_model, tmp_path, name
):
    """The file names in a bucket's manifest are untrusted until the manifest is validated."""
    import fsspec

    name = name.format(tmp_path=tmp_path)  # an absolute name: this test's own tmp dir
    location = Bundle(tiny_model, name="churn").save(memory_root)
    fs = fsspec.filesystem("memory")
    path = location.removeprefix("memory://")
    manifest = json.loads(fs.cat_file(f"{path}/manifest.json"))
    payload = b"written outside the cache"
    manifest["files"][name] = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    fs.pipe_file(f"{path}/{name}", payload)  # memory:// keeps the key as written
    fs.pipe_file(f"{path}/manifest.json", json.dumps(manifest).encode())

    expected = (
        r"churn/1/manifest\.json does not match the keras-bundle manifest schema "
        rf"\(format version 1\):\n- files: '{re.escape(name)}' does not match"
    )
    with pytest.raises(BundleError, match=expected):
        Bundle.load(memory_root)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
