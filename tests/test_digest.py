"""The bundle digest: one sha256 of a version's content, the same for every copy of it, and
``Bundle.load(location, digest=...)`` refusing any other content before it reads a part."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from conftest import plant_pickle

import bundle
from bundle import Bundle, DigestMismatchError, UsageError
from bundle.cli import main
from bundle.format.digest import digest_of


def test_the_digest_is_the_sha256_of_the_manifests_canonical_json(tabular_bundle):
    path, saved = tabular_bundle
    manifest = json.loads((path / "manifest.json").read_text())
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert saved.digest == expected == digest_of(path)


def test_every_copy_of_a_version_has_its_digest(tabular_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))
    path, saved = tabular_bundle
    for name in ("churn.tar.gz", "churn.zip"):
        archive = bundle.archive(path, tmp_path / name)
        assert Bundle.load(archive, digest=saved.digest).digest == saved.digest
    # A copy whose manifest.json was rewritten with other whitespace and key order.
    copy = tmp_path / "reindented" / "1.0.0"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    reordered = dict(reversed(list(manifest.items())))
    (copy / "manifest.json").write_text(json.dumps(reordered, indent=7))
    assert (copy / "manifest.json").read_bytes() != (path / "manifest.json").read_bytes()
    assert digest_of(copy) == saved.digest
    assert [v.digest for v in bundle.list_versions(copy.parent)] == [saved.digest]


def test_a_digest_of_other_content_is_refused_before_anything_is_unpickled(
    tabular_bundle, bundle_copy, tmp_path
):
    path, saved = tabular_bundle
    copy = bundle_copy(path)
    marker = tmp_path / "pwned"
    plant_pickle(copy, marker)
    assert bundle.verify(copy, load=False).ok  # its own hashes agree: it passes integrity
    with pytest.raises(
        DigestMismatchError, match=r"has digest sha256:[0-9a-f]{64}, not the pinned"
    ):
        Bundle.load(copy, digest=saved.digest, trusted=True)  # trusted: only this content
    assert not marker.exists()
    report = bundle.verify(copy, digest=saved.digest, load=False)
    assert [(c.name, c.passed) for c in report.checks] == [
        ("manifest", True),
        ("digest", False),
        ("files", True),
    ]


def test_changing_only_the_metadata_changes_the_digest(tabular_bundle, bundle_copy):
    path, saved = tabular_bundle
    copy = bundle_copy(path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["metadata"]["auc"] = 0.99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert digest_of(copy) != saved.digest
    with pytest.raises(DigestMismatchError) as caught:
        Bundle.load(copy, digest=saved.digest)
    assert (caught.value.expected, caught.value.found) == (saved.digest, digest_of(copy))


@pytest.mark.parametrize("digest", ["abc", "sha256:" + "A" * 64, "sha512:" + "a" * 64])
def test_a_malformed_digest_is_a_usage_error(tabular_bundle, digest):
    with pytest.raises(UsageError, match=r"is not a bundle digest: expected 'sha256:' followed"):
        Bundle.load(tabular_bundle[0], digest=digest)


def test_inspect_and_list_print_the_digest(tabular_bundle, capsys):
    path, saved = tabular_bundle
    assert main(["list", str(path.parent), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digest"] == saved.digest
    assert main(["list", str(path.parent)]) == 0
    assert saved.digest[: len("sha256:") + 12] in capsys.readouterr().out
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == saved.digest
