"""Model releases: golden outputs and verify(), reproducible and safe archives, aliases.

Everything here runs on real bundles on the local disk; object storage (the same API over
fsspec URLs) is in tests/test_s3.py, and races between processes in tests/test_concurrency.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

import bundle
from bundle import Bundle, BundleNotFoundError, UnsafeArchiveError, VerifyReport, VersionInfo
from bundle.storage import open_root

FORMATS = ["tar.gz", "zip"]
RELEASES = ("1.0.0", "1.2.0", "2.0.0")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Archives are extracted into the cache: keep each test's cache in its own tmp dir."""
    monkeypatch.setenv("KERAS_BUNDLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def released_root(tmp_path_factory, tiny_model):
    """A root holding versions 1.0.0, 1.2.0 and 2.0.0 of a tiny model (no input example)."""
    root = tmp_path_factory.mktemp("releases") / "churn"
    for version in RELEASES:
        Bundle(tiny_model, name="churn", version=version, metadata={"v": version}).save(root)
    return root


@pytest.fixture
def root(released_root, tmp_path):
    """A private copy of `released_root`, free to tag."""
    target = tmp_path / "root" / "churn"
    shutil.copytree(released_root, target)
    return target


def _rewrite(version_dir: Path, relative: str, data: bytes) -> None:
    """Replace a file and record its new hash and size, as a re-released bundle would."""
    (version_dir / relative).write_bytes(data)
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][relative] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=2))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------- golden outputs
def test_save_stores_the_outputs_of_the_input_example(tabular_bundle, tabular_data):
    path, saved = tabular_bundle
    example = tabular_data[0].iloc[:100]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["example"] == {
        "input": "example/input.parquet",
        "scores": "example/scores.npy",
        "predictions": "example/predictions.npy",
        "rows": 100,
        "rtol": 1e-05,
        "atol": 1e-06,
    }
    scores = np.load(path / "example" / "scores.npy", allow_pickle=False)
    predictions = np.load(path / "example" / "predictions.npy", allow_pickle=False)
    assert scores.shape == (100, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, saved.predict(example, postprocess=False), atol=1e-6)
    assert predictions.tolist() == list(saved.predict(example))
    for relative in ("example/scores.npy", "example/predictions.npy"):
        assert relative in manifest["files"]  # hashed like every other file


def test_no_predictions_are_stored_without_labels(image_bundle):
    path, _ = image_bundle
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["example"]["predictions"] is None
    assert sorted(p.name for p in (path / "example").iterdir()) == ["input.npy", "scores.npy"]


def test_verify_of_a_fresh_bundle_passes_every_check(tabular_bundle):
    path, _ = tabular_bundle
    report = Bundle.load(path).verify()
    assert isinstance(report, VerifyReport)
    assert report and report.ok and report.failed == []
    names = [check.name for check in report.checks]
    assert names == ["files", "load", "environment", "example scores", "example predictions"]
    details = {check.name: check.detail for check in report.checks}
    assert details["files"] == "10 files match their sha256 and size"  # 8 + the profile's two
    assert details["environment"] == "same versions as at save time"
    assert details["example scores"].startswith("max |difference| ")
    assert details["example scores"].endswith("over 300 values (rtol=1e-05, atol=1e-06)")
    assert details["example predictions"] == "100 of 100 equal"
    assert str(report).startswith("bundle 'churn' 1.0.0: verified\nPASS  files: 10 files")
    assert report.to_dict()["ok"] is True


def test_verify_without_labels_checks_scores_only(image_bundle):
    path, _ = image_bundle
    report = Bundle.load(path).verify()
    assert report
    assert [c.name for c in report.checks] == ["files", "load", "environment", "example scores"]


def test_verify_without_an_example_has_nothing_to_replay(released_root):
    report = Bundle.load(released_root).verify()
    assert report
    assert str(report.checks[-1]) == "PASS  example: no input example stored: nothing to replay"


def test_drifted_scores_fail_verify_and_say_how_many(tabular_bundle, bundle_copy):
    """What a TensorFlow upgrade that changes the numbers looks like: hashes pass, replay fails."""
    copy = bundle_copy(tabular_bundle[0])
    scores = np.load(copy / "example" / "scores.npy")
    drifted = scores.copy()
    drifted[:7, 0] += 1e-3  # 7 of 300 values, far beyond rtol=1e-5 / atol=1e-6
    _rewrite(copy, "example/scores.npy", _npy(drifted))

    loaded = Bundle.load(copy)  # the files match the (updated) manifest: it loads
    report = loaded.verify()
    assert not report and not report.ok
    assert [c.name for c in report.failed] == ["example scores"]
    [failed] = report.failed
    assert failed.detail.startswith("7 of 300 values drifted; max |difference| 0.001 over 300")
    assert "FAIL  example scores: 7 of 300 values drifted" in str(report)
    assert str(report).startswith("bundle 'churn' 1.0.0: FAILED (1 of 5)")
    passed = {c.name for c in report.checks if c.passed}
    assert passed == {"files", "load", "environment", "example predictions"}
    assert report.to_dict()["ok"] is False

    # the module-level verify() says the same, after its own manifest and files checks
    full = bundle.verify(copy)
    assert [c.name for c in full.checks] == [
        "manifest",
        "files",
        "load",
        "environment",
        "example scores",
        "example predictions",
    ]
    assert [c.name for c in full.failed] == ["example scores"]
    assert full.failed[0].detail.startswith("7 of 300 values drifted")


def test_drift_within_tolerance_passes(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    scores = np.load(copy / "example" / "scores.npy")
    _rewrite(copy, "example/scores.npy", _npy(scores + np.float32(1e-7)))
    assert Bundle.load(copy).verify()


def test_changed_predictions_fail_verify(tabular_bundle, bundle_copy):
    copy = bundle_copy(tabular_bundle[0])
    predictions = np.load(copy / "example" / "predictions.npy")
    changed = predictions.copy()
    changed[:4] = np.where(predictions[:4] == "churn", "stay", "churn")
    _rewrite(copy, "example/predictions.npy", _npy(changed))
    report = Bundle.load(copy).verify()
    assert [(c.name, c.detail) for c in report.failed] == [
        ("example predictions", "96 of 100 equal")
    ]


def test_verify_without_load_checks_manifest_and_files_only(tabular_bundle, bundle_copy):
    path, saved = tabular_bundle
    report = bundle.verify(path, load=False)
    assert report
    assert [(c.name, c.passed) for c in report.checks] == [("manifest", True), ("files", True)]
    assert report.checks[0].detail == f"format 1, schema valid, digest {saved.digest}"

    # drifted golden outputs are not looked at: nothing is replayed
    copy = bundle_copy(path)
    drifted = np.load(copy / "example" / "scores.npy") + np.float32(0.5)
    _rewrite(copy, "example/scores.npy", _npy(drifted))
    assert bundle.verify(copy, load=False)

    # a tampered file is: the report names it, and nothing is loaded
    (copy / "model.keras").write_bytes(b"not a model")
    report = bundle.verify(copy, load=False)
    assert not report
    assert [(c.name, c.passed) for c in report.checks] == [("manifest", True), ("files", False)]
    assert "1 of 10 files in bundle 'churn' 1.0.0 do not match" in report.checks[1].detail
    assert "- model.keras: 11 bytes on disk" in report.checks[1].detail


def test_verify_without_load_never_imports_tensorflow(tabular_bundle):
    path, _ = tabular_bundle
    result = run_python(
        f"""
        import json, sys
        import bundle

        report = bundle.verify({str(path)!r}, load=False)
        heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        print(json.dumps([bool(report), [c.name for c in report.checks], heavy]))
        """
    )
    assert json.loads(result.stdout.splitlines()[-1]) == [True, ["manifest", "files"], []]


# ---------------------------------------------------------------------------- archives
@pytest.mark.parametrize("fmt", FORMATS)
def test_archive_is_byte_identical_whatever_the_file_times(
    tabular_bundle, bundle_copy, tmp_path, fmt
):
    path, _ = tabular_bundle
    first, second = tmp_path / f"first.{fmt}", tmp_path / f"second.{fmt}"
    assert bundle.archive(path, first) == first
    bundle.archive(path, second)
    assert first.read_bytes() == second.read_bytes()

    # a copy with other mtimes and modes, as after a download or a checkout
    copy = bundle_copy(path)
    for index, file in enumerate(sorted(p for p in copy.rglob("*") if p.is_file())):
        os.utime(file, (1_600_000_000 + index * 3_600, 1_700_000_000 - index * 7_200))
        file.chmod(0o600 if index % 2 else 0o664)
    assert _files(copy) == _files(path)
    third = tmp_path / f"copy.{fmt}"
    bundle.archive(copy, third)
    assert third.read_bytes() == first.read_bytes()

    # a root and its version give the same release
    fourth = tmp_path / f"root.{fmt}"
    bundle.archive(path.parent, fourth, version="1.0.0")
    assert fourth.read_bytes() == first.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_archive_holds_the_bundle_under_name_and_version(tabular_bundle, tmp_path, fmt):
    path, _ = tabular_bundle
    output = bundle.archive(path, tmp_path / f"churn.{fmt}")
    if fmt == "zip":
        with zipfile.ZipFile(output) as archive:
            names = archive.namelist()
    else:
        with tarfile.open(output) as archive:
            names = archive.getnames()
    expected = {f"churn-1.0.0/{relative}" for relative in _files(path)}
    assert {name.rstrip("/") for name in names} >= expected
    assert all(name.startswith("churn-1.0.0") for name in names)


@pytest.mark.parametrize("fmt", FORMATS)
def test_archive_loads_and_predicts_like_the_directory(tabular_bundle, tabular_data, tmp_path, fmt):
    path, _ = tabular_bundle
    frame = tabular_data[0]
    output = bundle.archive(path, tmp_path / f"churn-1.0.0.{fmt}")
    from_archive = Bundle.load(output)
    from_directory = Bundle.load(path)
    assert (from_archive.name, from_archive.version) == ("churn", "1.0.0")
    assert from_archive.path.is_relative_to(tmp_path / "cache")
    assert from_archive.path.name == "churn-1.0.0"
    assert _files(from_archive.path) == _files(path)
    np.testing.assert_array_equal(
        from_archive.predict(frame, postprocess=False),
        from_directory.predict(frame, postprocess=False),
    )
    assert list(from_archive.predict(frame)) == list(from_directory.predict(frame))
    assert bundle.verify(output)  # a release file verifies like its directory

    # a second load of the same release reuses its extraction
    assert Bundle.load(output).path == from_archive.path
    assert len(list((tmp_path / "cache" / "archives").iterdir())) == 1


def _tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = link
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _evil_tar(path: Path, member: tuple) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(*_tar_member("churn-1.0.0", kind=tarfile.DIRTYPE))
        archive.addfile(*_tar_member("churn-1.0.0/manifest.json", b"{}"))
        archive.addfile(*member)
    return path


def _evil_zip(path: Path, name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("churn-1.0.0/", b"")
        archive.writestr("churn-1.0.0/manifest.json", b"{}")
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: external_attr holds the mode
        info.external_attr = mode << 16
        archive.writestr(info, data)
    return path


MALICIOUS = {
    "tar-dotdot": (
        lambda d: _evil_tar(d / "release.tar.gz", _tar_member("../evil", b"pwned")),
        r"member '\.\./evil' has a '\.\.' component, so it could be written outside",
    ),
    "tar-deep-dotdot": (
        lambda d: _evil_tar(
            d / "release.tar.gz", _tar_member("churn-1.0.0/../../../../evil", b"pwned")
        ),
        r"member 'churn-1\.0\.0/\.\./\.\./\.\./\.\./evil' has a '\.\.' component",
    ),
    "tar-symlink": (
        lambda d: _evil_tar(
            d / "release.tar.gz",
            _tar_member("churn-1.0.0/model.keras", kind=tarfile.SYMTYPE, link=str(d / "evil")),
        ),
        r"member 'churn-1\.0\.0/model\.keras' is a symbolic link to '.*evil', and a bundle "
        r"archive holds only regular files and folders",
    ),
    "zip-dotdot": (
        lambda d: _evil_zip(d / "release.zip", "../evil", b"pwned"),
        r"member '\.\./evil' has a '\.\.' component, so it could be written outside",
    ),
    "zip-symlink": (
        lambda d: _evil_zip(
            d / "release.zip",
            "churn-1.0.0/model.keras",
            str(d / "evil").encode(),
            mode=stat.S_IFLNK | 0o777,
        ),
        r"member 'churn-1\.0\.0/model\.keras' is a symbolic link",
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused_and_nothing_is_written(tmp_path, case):
    make, message = MALICIOUS[case]
    releases = tmp_path / "downloads"
    releases.mkdir()
    archive = make(releases)
    before = _files(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=message) as caught:
        Bundle.load(archive)
    assert "write_archive() never makes such an archive: it was tampered with" in str(caught.value)
    assert caught.value.member is not None
    # nothing outside the cache changed, and nothing at all was extracted into it
    assert _files(tmp_path) == before
    assert not list(tmp_path.rglob("evil"))
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if not p.is_dir()] == []
    assert not [p for p in cache.rglob(".extract-*")]


def test_missing_archive_is_not_found(tmp_path):
    with pytest.raises(BundleNotFoundError, match=r"No archive at .*nowhere\.tar\.gz\."):
        Bundle.load(tmp_path / "nowhere.tar.gz")


# ---------------------------------------------------------------------------- list_versions
def test_list_versions_reports_each_version(root):
    bundle.tag(root, "production", "1.2.0")
    bundle.tag(root, "canary", "2.0.0")
    bundle.tag(root, "latest", "2.0.0")
    (root / ".staging-unfinished").mkdir()  # a save in progress is not a version
    (root / "3.0.0").mkdir()  # nor is a folder without a manifest
    infos = bundle.list_versions(root)
    assert all(isinstance(info, VersionInfo) for info in infos)
    assert [info.version for info in infos] == list(RELEASES)
    assert [info.aliases for info in infos] == [(), ("production",), ("canary", "latest")]
    for info in infos:
        manifest = json.loads((root / info.version / "manifest.json").read_text())
        assert info.created == manifest["created"]
        assert info.size == sum(entry["size"] for entry in manifest["files"].values())
        assert info.location == f"{root}/{info.version}"


def test_list_versions_of_an_empty_root(tmp_path):
    assert bundle.list_versions(tmp_path / "nothing") == []


# ---------------------------------------------------------------------------- aliases
def test_tag_points_an_alias_and_moving_it_keeps_history(root):
    record = bundle.tag(root, "production", "1.2.0")
    assert record["alias"] == "production" and record["version"] == "1.2.0"
    assert [entry["version"] for entry in record["history"]] == ["1.2.0"]
    assert Bundle.load(f"{root}@production").version == "1.2.0"
    assert Bundle.load(root, version="production").version == "1.2.0"
    assert Bundle.load(root).version == "2.0.0"  # the root alone still means the highest

    moved = bundle.tag(root, "production", "1.0.0")
    assert moved["version"] == "1.0.0"
    assert [entry["version"] for entry in moved["history"]] == ["1.2.0", "1.0.0"]
    assert moved["history"][0] == record["history"][0]  # the first entry is kept as it was
    # one record per move, each carrying the whole history; the latest is the alias
    records = sorted((root / ".aliases" / "production").iterdir())
    assert [p.name for p in records] == ["0000000001.json", "0000000002.json"]
    assert json.loads(records[0].read_text()) == record
    assert json.loads(records[1].read_text()) == moved
    assert Bundle.load(f"{root}@production").version == "1.0.0"
    assert Bundle.load(root, version="production").metadata["v"] == "1.0.0"


def test_archive_and_verify_follow_an_alias(root, tmp_path):
    bundle.tag(root, "production", "1.2.0")
    via_alias = bundle.archive(f"{root}@production", tmp_path / "production.tar.gz")
    direct = bundle.archive(root / "1.2.0", tmp_path / "direct.tar.gz")
    assert via_alias.read_bytes() == direct.read_bytes()
    report = bundle.verify(root, version="production", load=False)
    assert report and report.label == "bundle 'churn' 1.2.0"


def test_alias_and_version_together_are_refused(root):
    bundle.tag(root, "production", "1.2.0")
    with pytest.raises(ValueError, match=r"Pass either .*@production' or version='1\.0\.0'"):
        Bundle.load(f"{root}@production", version="1.0.0")


def test_tagging_a_missing_version_lists_the_versions(root):
    with pytest.raises(BundleNotFoundError) as caught:
        bundle.tag(root, "production", "9.9.9")
    assert str(caught.value) == (
        f"Cannot tag 'production': no version '9.9.9' under {root}. Versions there:\n"
        "- 2.0.0\n- 1.2.0\n- 1.0.0"
    )
    assert caught.value.available == list(RELEASES)
    assert not (root / ".aliases").exists()  # nothing was written


def test_unknown_alias_lists_versions_and_aliases(root):
    bundle.tag(root, "production", "1.2.0")
    bundle.tag(root, "canary", "2.0.0")
    expected = (
        rf"No version or alias 'staging' under {root}\.\nVersions there:\n"
        r"- 2\.0\.0\n- 1\.2\.0\n- 1\.0\.0\nAliases there:\n- canary\n- production$"
    )
    with pytest.raises(BundleNotFoundError, match=expected) as caught:
        Bundle.load(f"{root}@staging")
    assert caught.value.available == list(RELEASES)
    with pytest.raises(BundleNotFoundError, match=expected):
        Bundle.load(root, version="staging")


def test_alias_to_a_removed_version_says_so(root):
    bundle.tag(root, "production", "1.2.0")
    shutil.rmtree(root / "1.2.0")
    with pytest.raises(
        BundleNotFoundError,
        match=r"Alias 'production' under .* points at version '1\.2\.0', which is not published",
    ):
        Bundle.load(f"{root}@production")


@pytest.mark.parametrize("alias", ["", "..", "../escape", "prod/x", ".hidden", "a b"])
def test_alias_names_must_be_safe_file_names(root, alias):
    with pytest.raises(ValueError, match=r"is not a valid version name: use letters, digits"):
        bundle.tag(root, alias, "1.0.0")
    assert not (root / ".aliases").exists()
    assert not (root / "escape.json").exists()


def test_a_root_below_a_folder_with_an_at_sign_is_not_an_alias(released_root, tmp_path):
    target = tmp_path / "team@example" / "churn"
    shutil.copytree(released_root, target)
    assert Bundle.load(target).version == "2.0.0"
    bundle.tag(target, "production", "1.0.0")
    assert Bundle.load(f"{target}@production").version == "1.0.0"


def test_moving_an_alias_is_atomic(root):
    """A reader never sees a half-written alias record, however often it moves."""
    bundle.tag(root, "production", "1.0.0")
    reading = open_root(root)
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def read_in_a_loop() -> None:
        while not stop.is_set():
            try:
                seen.append(reading.read_alias("production")["version"])
            except Exception as exc:  # a missing or half-written record
                problems.append(repr(exc))

    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        for index in range(200):
            bundle.tag(root, "production", ("1.2.0", "2.0.0")[index % 2])
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert {"1.2.0", "2.0.0"} <= set(seen)  # it did read while the alias moved
    record = reading.read_alias("production")
    assert record["version"] == "2.0.0"
    assert len(record["history"]) == 201
    names = sorted(p.name for p in (root / ".aliases" / "production").iterdir())
    assert names == [f"{n:010d}.json" for n in range(1, 202)]  # no temp file left


# ---------------------------------------------------------------------------- issue 13, storage
def test_a_malformed_alias_record_is_a_storage_error_and_a_new_tag_supersedes_it(root):
    bundle.tag(root, "production", "1.0.0")
    (record,) = (root / ".aliases" / "production").iterdir()
    record.write_text("{not json")
    with pytest.raises(
        bundle.StorageError,
        match=r"The record of alias 'production' at .+0000000001\.json is not a valid alias "
        r"record \(not JSON: .+\)\.\nPoint the alias again \(bundle tag .+ production VERSION\)",
    ):
        Bundle.load(f"{root}@production")
    assert bundle.tag(root, "production", "2.0.0")["version"] == "2.0.0"  # supersedes it
    assert Bundle.load(f"{root}@production").version == "2.0.0"


@pytest.mark.parametrize("below", [False, True])
def test_saving_into_a_root_that_is_a_file_says_so(tiny_model, tmp_path, below):
    blocker = tmp_path / "models"
    blocker.write_text("not a folder")
    target = blocker / "churn" if below else blocker
    where = f"{blocker} is" if below else "it is"
    with pytest.raises(
        bundle.StorageError,
        match=rf"Cannot save into {target}: {where} a file, not a folder\.\nPass a folder",
    ):
        Bundle(tiny_model, name="m", version="1").save(target)
    assert blocker.read_text() == "not a folder"


def test_archiving_a_corrupted_version_is_refused_and_writes_nothing(root, tmp_path):
    model = root / "2.0.0" / "model.keras"
    data = bytearray(model.read_bytes())
    data[-20] ^= 0xFF
    model.write_bytes(bytes(data))
    out = tmp_path / "out.tar.gz"
    with pytest.raises(
        bundle.IntegrityError,
        match=r"Refusing to archive bundle 'churn' 2\.0\.0: the release could never load\. "
        r"1 of \d+ files .+\n- model\.keras: ",
    ):
        bundle.archive(root, str(out), version="2.0.0")
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []


def test_an_archive_whose_single_folder_starts_with_a_dot_loads(root, tmp_path):
    archive = tmp_path / "hidden.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "1.0.0", arcname=".churn")
    assert Bundle.load(archive).metadata == {"v": "1.0.0"}


def test_a_tar_gz_cut_in_its_gzip_trailer_is_refused(root, tmp_path):
    good = tmp_path / "good.tar.gz"
    bundle.archive(root, str(good), version="1.0.0")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:-4])  # the gzip trailer: CRC-32 and length
    with pytest.raises(
        bundle.IntegrityError,
        match=r"cut\.tar\.gz is not a readable tar\.gz archive \(EOFError: .+\)\.\n"
        "It is probably truncated or corrupt",
    ):
        Bundle.load(cut)


def test_a_damaged_extraction_cache_entry_is_extracted_again(root, tmp_path):
    archive = tmp_path / "churn.tar.gz"
    bundle.archive(root, str(archive), version="1.2.0")
    first = Bundle.load(archive)
    cached = first.path / "model.keras"
    cached.write_bytes(b"damaged on disk")  # the cache, not the archive
    again = Bundle.load(archive)  # the intact archive is not blamed
    assert again.metadata == {"v": "1.2.0"} and again.verify()
    assert (again.path / "model.keras").read_bytes() != b"damaged on disk"


UNREADABLE_CHILD = """
    import json, sys, warnings
    import bundle
    root = sys.argv[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        versions = [v.version for v in bundle.list_versions(root)]
    tagged = bundle.tag(root, "production", "2.0.0")["version"]
    print(json.dumps({"versions": versions, "tagged": tagged,
                      "warnings": [f"{type(w.message).__name__}: {w.message}" for w in caught]}))
"""


def test_an_unreadable_version_directory_blocks_no_other_version(root):
    """Listed and tagged by a process that cannot read one version: the others are there."""
    import subprocess
    import sys
    import textwrap

    prefix = []
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder unreadable")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    (root / "1.2.0").chmod(0o000)
    try:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [*prefix, sys.executable, "-c", textwrap.dedent(UNREADABLE_CHILD), str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        (root / "1.2.0").chmod(0o755)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["versions"] == ["1.0.0", "2.0.0"]
    assert report["tagged"] == "2.0.0"
    assert any(
        w.startswith(f"StorageWarning: Skipped {root / '1.2.0'}: it cannot be read (Permission")
        and "fix its permissions" in w
        for w in report["warnings"]
    ), report["warnings"]


TAGGER = """
    import sys
    import bundle
    root, version, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for _ in range(count):
        bundle.tag(root, "production", version)
"""


def test_concurrent_taggers_in_two_processes_never_lose_history(root):
    import subprocess
    import sys
    import textwrap

    bundle.tag(root, "production", "1.0.0")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    taggers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(TAGGER), str(root), version, "40"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("1.2.0", "2.0.0")
    ]
    for tagger in taggers:
        assert tagger.wait(timeout=300) == 0, tagger.stderr.read()
        tagger.stderr.close()
    history = [entry["version"] for entry in open_root(root).read_alias("production")["history"]]
    assert len(history) == 81  # every move of both processes, none lost
    assert history.count("1.2.0") == 40 and history.count("2.0.0") == 40
