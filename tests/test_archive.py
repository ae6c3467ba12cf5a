"""bundle.storage.archives: reproducible writes, round trips, refusal of unsafe archives.

Malicious archives are built here byte by byte with tarfile, zipfile and struct, and every
refusal checks that nothing was written anywhere under the test's folder.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bundle.storage.archives
from bundle.errors import BundleError, IntegrityError, UnsafeArchiveError, UnsupportedFormatError
from bundle.storage.archives import (
    ARCHIVE_SUFFIXES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    archive_root_name,
    extract_archive,
    is_archive_name,
    write_archive,
)

FORMATS = ["tar.gz", "zip"]
LONG_NAME = "long/" + "x" * 120 + ".txt"  # over tar's 100-character name field: a pax header
FILES = {
    "manifest.json": b'{"format_version": 1}\n',
    "model.keras": random.Random(0).randbytes(200_000),
    "steps/000-scaler.json": b'{"mean": [0.5]}\n' * 100,
    "custom_objects/layers.py": b"def swish(x):\n    return x\n",
    "requirements.txt": b"keras==3.3.3\n",
    "notes/ünïcödé-日本.txt": "ünïcödé".encode(),
    "empty.bin": b"",
    LONG_NAME: b"a long name",
}
EMPTY_DIRS = ["example/empty"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs FIFOs, rlimits, umask, cat")


def make_bundle(path: Path, *, reverse: bool = False) -> Path:
    """Write FILES and EMPTY_DIRS under `path`, in sorted or reverse creation order."""
    path.mkdir()
    for name in sorted([*FILES, *EMPTY_DIRS], reverse=reverse):
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in FILES:
            target.write_bytes(FILES[name])
        else:
            target.mkdir(parents=True, exist_ok=True)
    return path


def tree(path: Path) -> dict[str, bytes | None]:
    """Every path under `path`: file bytes, or None for a folder."""
    return {
        item.relative_to(path).as_posix(): None if item.is_dir() else item.read_bytes()
        for item in sorted(path.rglob("*"))
    }


def names(path: Path) -> set[str]:
    return {item.relative_to(path).as_posix() for item in path.rglob("*")}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "src")


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("churn-1.2.0.tar.gz", True),
        ("churn.TGZ", True),
        ("s3://bucket/churn.zip", True),
        ("churn.tar", False),
        ("churn.gz", False),
        ("churn", False),
    ],
)
def test_is_archive_name(name: str, expected: bool) -> None:
    assert is_archive_name(name) is expected


def test_public_constants() -> None:
    assert ARCHIVE_SUFFIXES == (".tar.gz", ".tgz", ".zip")
    assert DEFAULT_MAX_BYTES == 8 * 2**30
    assert DEFAULT_MAX_MEMBERS == 10_000


# -- reproducible writes -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_writes_are_byte_identical(src: Path, tmp_path: Path, fmt: str) -> None:
    first, second = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    write_archive(src, first, root_name="churn-1.2.0")
    write_archive(src, second, root_name="churn-1.2.0")
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_copy_with_other_times_modes_and_order_is_byte_identical(
    src: Path, tmp_path: Path, fmt: str
) -> None:
    copy = make_bundle(tmp_path / "copy", reverse=True)
    for i, item in enumerate(sorted(copy.rglob("*"), reverse=True)):
        item.chmod(0o700 if item.is_dir() else 0o600 + (i % 2) * 0o155)
        os.utime(item, (1_000_000_000 + i, 1_234_567_890 + 1000 * i))
    write_archive(src, tmp_path / f"a.{fmt}", root_name="churn")
    write_archive(copy, tmp_path / f"b.{fmt}", root_name="churn")
    assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_dest_gives_the_same_bytes(src: Path, tmp_path: Path, fmt: str) -> None:
    write_archive(src, tmp_path / f"a.{fmt}", root_name="churn")
    buffer = io.BytesIO()
    write_archive(src, buffer, root_name="churn", fmt=fmt)
    assert buffer.getvalue() == (tmp_path / f"a.{fmt}").read_bytes()


def test_tar_gz_metadata_is_normalized(src: Path, tmp_path: Path) -> None:
    path = tmp_path / "churn.tgz"
    write_archive(src, path, root_name="churn")
    header = path.read_bytes()[:10]
    assert header[3] == 0  # no FNAME flag: the file name is not recorded
    assert header[4:8] == b"\0\0\0\0"  # mtime 0
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted_member_names("churn")
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            946_684_800,
            0,
            0,
            "",
            "",
        )
        assert member.mode == (0o755 if member.isdir() else 0o644)


def test_zip_metadata_is_normalized(src: Path, tmp_path: Path) -> None:
    path = tmp_path / "churn.zip"
    write_archive(src, path, root_name="churn")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert [i.filename.rstrip("/") for i in infos] == sorted_member_names("churn")
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.create_system == 3
        mode = info.external_attr >> 16
        assert mode == (stat.S_IFDIR | 0o755 if info.is_dir() else stat.S_IFREG | 0o644)


def sorted_member_names(root: str) -> list[str]:
    """Member names in archive order: sorted by path components, folders included."""
    paths = set(FILES) | set(EMPTY_DIRS)
    for path in list(paths):
        parts = path.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    ordered = sorted(paths, key=lambda p: p.split("/"))
    return [root] + [f"{root}/{p}" for p in ordered]


@posix_only
@pytest.mark.parametrize("fmt", FORMATS)
def test_written_archive_follows_the_umask(src: Path, tmp_path: Path, fmt: str) -> None:
    old = os.umask(0o022)
    try:
        write_archive(src, tmp_path / f"a.{fmt}", root_name="churn")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / f"a.{fmt}").stat().st_mode) == 0o644


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_gives_the_same_files_and_bytes(src: Path, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"churn.{fmt}"
    write_archive(src, path, root_name="churn-1.2.0")
    out = extract_archive(path, tmp_path / "out")
    assert out == tmp_path / "out" / "churn-1.2.0"
    assert tree(out) == tree(src)
    assert os.listdir(tmp_path / "out") == ["churn-1.2.0"]  # no staging folder left
    assert archive_root_name(path) == "churn-1.2.0"


@pytest.mark.parametrize("fmt", FORMATS)
def test_extracts_from_a_seekable_stream_and_leaves_it_in_place(
    src: Path, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"churn.{fmt}"
    write_archive(src, path, root_name="churn")
    with open(path, "rb") as stream:
        assert archive_root_name(stream) == "churn"
        assert stream.tell() == 0
        out = extract_archive(stream, tmp_path / "out")
    assert tree(out) == tree(src)


@posix_only
@pytest.mark.parametrize("fmt", FORMATS)
def test_extracts_from_a_pipe(src: Path, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"churn.{fmt}"
    write_archive(src, path, root_name="churn")
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        assert not cat.stdout.seekable()
        out = extract_archive(cat.stdout, tmp_path / "out")
    assert tree(out) == tree(src)


def test_extracts_names_with_a_dot_slash_prefix(tmp_path: Path) -> None:
    path = make_tar(tmp_path, [tdir("./churn/"), tfile("./churn/a.txt", b"a")])
    out = extract_archive(path, tmp_path / "out")
    assert tree(out) == {"a.txt": b"a"}


@settings(max_examples=25, deadline=None)
@given(
    files=st.dictionaries(
        st.tuples(
            st.sampled_from(["", "d/", "d/e/", "f/"]),
            st.text(alphabet="abc-_.0", min_size=1, max_size=6),
        ).map(lambda folder_name: f"{folder_name[0]}x{folder_name[1]}"),
        st.binary(max_size=3000),
        max_size=8,
    ),
    fmt=st.sampled_from(FORMATS),
)
def test_any_tree_round_trips_and_rewrites_identically(files: dict[str, bytes], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name, data in files.items():
            Path(src, name).parent.mkdir(parents=True, exist_ok=True)
            Path(src, name).write_bytes(data)
        write_archive(src, Path(tmp, f"a.{fmt}"), root_name="b")
        write_archive(src, Path(tmp, f"b.{fmt}"), root_name="b")
        assert Path(tmp, f"a.{fmt}").read_bytes() == Path(tmp, f"b.{fmt}").read_bytes()
        assert tree(extract_archive(Path(tmp, f"a.{fmt}"), Path(tmp, "out"))) == tree(src)


# -- writes that fail ----------------------------------------------------------------------

CHILD = """
import resource, signal, sys, types
from pathlib import Path

# Import bundle.storage.archives alone: the package's __init__ pulls in Keras, and this only needs
# the archive module.
package = types.ModuleType("bundle")
package.__path__ = [sys.argv[1]]
sys.modules["bundle"] = package
from bundle.storage.archives import write_archive

signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[4] == "ignore" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
write_archive(Path(sys.argv[2]), Path(sys.argv[3]), root_name="churn")
"""


def write_with_file_size_limit(src: Path, dest: Path, on_limit: str) -> subprocess.CompletedProcess:
    """Run write_archive in a child that may write at most 64 KiB per file."""
    package_dir = str(Path(bundle.storage.archives.__file__).parent.parent)
    return subprocess.run(
        [sys.executable, "-c", CHILD, package_dir, str(src), str(dest), on_limit],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
    )


@posix_only
@pytest.mark.parametrize("fmt", FORMATS)
def test_crash_mid_write_never_leaves_the_final_name(src: Path, tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / "out" / f"churn.{fmt}"
    dest.parent.mkdir()
    result = write_with_file_size_limit(src, dest, on_limit="crash")
    assert result.returncode == -signal.SIGXFSZ  # killed by the kernel mid-write
    assert not dest.exists()
    assert all(name.endswith(".tmp") for name in os.listdir(dest.parent))


@posix_only
@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_keeps_the_previous_archive_and_no_temp_file(
    src: Path, tmp_path: Path, fmt: str
) -> None:
    dest = tmp_path / "out" / f"churn.{fmt}"
    dest.parent.mkdir()
    dest.write_bytes(b"previous release")
    result = write_with_file_size_limit(src, dest, on_limit="ignore")
    assert result.returncode == 1
    assert "File too large" in result.stderr
    assert dest.read_bytes() == b"previous release"
    assert os.listdir(dest.parent) == [dest.name]


@posix_only
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda src: (src / "link").symlink_to("/etc/passwd"),
            r"^Refusing to archive .*src: entry 'link' is a symbolic link to '/etc/passwd', "
            r"and a bundle archive holds only regular files and folders: a link can point "
            r"outside the destination, a device or FIFO reaches past the file system\.\n"
            r"Rename, replace or remove it in .*src",
        ),
        (
            lambda src: os.mkfifo(src / "steps" / "pipe"),
            r"entry 'steps/pipe' is a FIFO \(named pipe\), and a bundle archive holds only",
        ),
        (
            lambda src: (src / "a\\b.txt").write_bytes(b""),
            r"entry 'a\\\\b.txt' contains a backslash, which Windows reads as a folder "
            r"separator",
        ),
        (
            lambda src: (src / "Manifest.JSON").write_bytes(b""),
            r"entry 'manifest.json' differs only in case from 'Manifest.JSON', so one would "
            r"overwrite the other on macOS and Windows, which ignore case",
        ),
    ],
    ids=["symlink", "fifo", "backslash", "case"],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_write_refuses_what_would_not_extract_the_same(
    src: Path, tmp_path: Path, fmt: str, make: Callable[[Path], object], match: str
) -> None:
    make(src)
    with pytest.raises(UnsafeArchiveError, match=match):
        write_archive(src, tmp_path / f"churn.{fmt}", root_name="churn")
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("root_name", ["", ".", "..", "a/b", "a\\b", "C:x"])
def test_write_refuses_a_root_name_that_is_not_one_folder(
    src: Path, tmp_path: Path, root_name: str
) -> None:
    match = r"is not a single folder name\.\nPass a plain name such as 'churn-1\.2\.0'"
    with pytest.raises(BundleError, match=match):
        write_archive(src, tmp_path / "a.zip", root_name=root_name)


@pytest.mark.parametrize(
    ("dest", "fmt", "match"),
    [
        ("churn.tar", None, r"its name ends with none of \.tar\.gz, \.tgz, \.zip\.\nName it"),
        ("churn.zip", "tar.gz", r"fmt='tar\.gz' was passed, but .*churn\.zip is named as a zip"),
        ("churn.zip", "rar", r"Unknown archive format fmt='rar': the supported formats are"),
        (None, None, r"Cannot tell which archive format to write to a stream\.\nPass fmt="),
    ],
)
def test_write_refuses_an_unknown_format(
    src: Path, tmp_path: Path, dest: str | None, fmt: str | None, match: str
) -> None:
    target = io.BytesIO() if dest is None else tmp_path / dest
    with pytest.raises(UnsupportedFormatError, match=match):
        write_archive(src, target, root_name="churn", fmt=fmt)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_write_accepts_fmt_for_an_unusual_name(src: Path, tmp_path: Path) -> None:
    write_archive(src, tmp_path / "churn.release", root_name="churn", fmt="zip")
    assert zipfile.is_zipfile(tmp_path / "churn.release")


def test_write_refuses_a_source_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"Cannot archive .*missing: it is not a directory"):
        write_archive(tmp_path / "missing", tmp_path / "a.zip", root_name="churn")


# -- hand-made archives --------------------------------------------------------------------


def tinfo(name: str, type: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type
    for field, value in fields.items():
        setattr(info, field, value)
    return info


def tdir(name: str) -> tuple[tarfile.TarInfo, None]:
    return tinfo(name, tarfile.DIRTYPE), None


def tfile(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tinfo(name, size=len(data)), data


def make_tar(tmp: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path = tmp / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return path


def make_zip(tmp: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    path = tmp / "evil.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def zinfo(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def patch_central_directory(path: Path, name: str, **fields: int) -> Path:
    """Overwrite header fields of member `name` in the zip's central directory."""
    offsets = {"flags": (8, "<H"), "file_size": (24, "<I")}
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    (count,) = struct.unpack_from("<H", data, end + 10)
    (pos,) = struct.unpack_from("<I", data, end + 16)
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len].decode() == name:
            for field, value in fields.items():
                offset, fmt = offsets[field]
                struct.pack_into(fmt, data, pos + offset, value)
        pos += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))
    return path


def understated_tar(tmp: Path) -> Path:
    """A tar whose member declares 512 bytes but is followed by 4,096."""
    raw = tinfo("root/", tarfile.DIRTYPE).tobuf() + tinfo("root/a.bin", size=512).tobuf()
    path = tmp / "evil.tar.gz"
    path.write_bytes(gzip.compress(raw + b"A" * 4096 + b"\0" * 1024))
    return path


def huge_pax_header_tar(tmp: Path) -> Path:
    header = tinfo("././@PaxHeader", tarfile.XHDTYPE, size=2**31).tobuf(tarfile.USTAR_FORMAT)
    path = tmp / "evil.tar.gz"
    path.write_bytes(gzip.compress(header + b"\0" * 1024))
    return path


def zip_with_lying_size(tmp: Path, data: bytes, declared: int) -> Path:
    path = make_zip(tmp, [("root/", b""), ("root/a.bin", data)])
    return patch_central_directory(path, "root/a.bin", file_size=declared)


OUTSIDE = "OUTSIDE"  # replaced by the test's folder, so an escape would land where we look
MALICIOUS: list[tuple[str, Callable[[Path], Path], str, dict[str, int]]] = [
    (
        "tar-absolute",
        lambda t: make_tar(t, [tdir("root/"), tfile(f"{t}/escape.txt", b"x")]),
        r"^Refusing to extract .*evil\.tar\.gz: member 'OUTSIDE/escape\.txt' is an absolute "
        r"path, so it would be written outside the destination\.\nwrite_archive\(\) never "
        r"makes such an archive: it was tampered with, or is not a bundle archive\. Do not use "
        r"it; get it again from its source\.$",
        {},
    ),
    (
        "zip-absolute",
        lambda t: make_zip(t, [("root/", b""), (f"{t}/escape.txt", b"x")]),
        r"member 'OUTSIDE/escape\.txt' is an absolute path, so it would be written outside",
        {},
    ),
    (
        "zip-drive-letter",
        lambda t: make_zip(t, [("C:/escape.txt", b"x")]),
        r"member 'C:/escape\.txt' starts with a drive letter, so it would be written outside "
        r"the destination on Windows",
        {},
    ),
    (
        "tar-dotdot",
        lambda t: make_tar(t, [tfile("../escape.txt", b"x")]),
        r"member '\.\./escape\.txt' has a '\.\.' component, so it could be written outside",
        {},
    ),
    (
        "tar-nested-dotdot",
        lambda t: make_tar(t, [tdir("root/"), tfile("root/a/../../escape.txt", b"x")]),
        r"member 'root/a/\.\./\.\./escape\.txt' has a '\.\.' component",
        {},
    ),
    (
        "zip-nested-dotdot",
        lambda t: make_zip(t, [("root/", b""), ("root/../../escape.txt", b"x")]),
        r"member 'root/\.\./\.\./escape\.txt' has a '\.\.' component",
        {},
    ),
    (
        "zip-backslash",
        lambda t: make_zip(t, [("root/", b""), ("root\\..\\..\\escape.txt", b"x")]),
        r"contains a backslash, which Windows reads as a folder separator, so it could land "
        r"elsewhere than named",
        {},
    ),
    (
        "tar-symlink",
        lambda t: make_tar(
            t,
            [
                tdir("root/"),
                (tinfo("root/link", tarfile.SYMTYPE, linkname="../../outside"), None),
                tfile("root/link/escape.txt", b"x"),
            ],
        ),
        r"member 'root/link' is a symbolic link to '\.\./\.\./outside', and a bundle archive "
        r"holds only regular files and folders: a link can point outside the destination",
        {},
    ),
    (
        "zip-symlink",
        lambda t: make_zip(
            t, [("root/", b""), (zinfo("root/link", stat.S_IFLNK | 0o777), b"/etc/passwd")]
        ),
        r"member 'root/link' is a symbolic link, and a bundle archive holds only regular",
        {},
    ),
    (
        "tar-hardlink",
        lambda t: make_tar(
            t,
            [
                tdir("root/"),
                tfile("root/a", b"x"),
                (tinfo("root/b", tarfile.LNKTYPE, linkname="/etc/passwd"), None),
            ],
        ),
        r"member 'root/b' is a hard link to '/etc/passwd', and a bundle archive holds only",
        {},
    ),
    (
        "tar-fifo",
        lambda t: make_tar(t, [tdir("root/"), (tinfo("root/p", tarfile.FIFOTYPE), None)]),
        r"member 'root/p' is a FIFO \(named pipe\), and a bundle archive holds only regular",
        {},
    ),
    (
        "tar-char-device",
        lambda t: make_tar(
            t, [tdir("root/"), (tinfo("root/null", tarfile.CHRTYPE, devmajor=1), None)]
        ),
        r"member 'root/null' is a character device, and a bundle archive holds only regular",
        {},
    ),
    (
        "tar-block-device",
        lambda t: make_tar(t, [tdir("root/"), (tinfo("root/sda", tarfile.BLKTYPE), None)]),
        r"member 'root/sda' is a block device, and",
        {},
    ),
    (
        "zip-fifo",
        lambda t: make_zip(t, [("root/", b""), (zinfo("root/p", stat.S_IFIFO | 0o644), b"")]),
        r"member 'root/p' is a FIFO \(named pipe\), and",
        {},
    ),
    (
        "tar-two-top-level-folders",
        lambda t: make_tar(t, [tfile("root/a.txt", b"a"), tfile("other/b.txt", b"b")]),
        r"(?s)member 'other/b\.txt' is not under the folder 'root', and a bundle archive holds "
        r"exactly one top-level folder\.\nThe top-level names are:\n- other\n- root\n"
        r"write_archive\(\) never makes",
        {},
    ),
    (
        "zip-top-level-file",
        lambda t: make_zip(t, [("root", b"x")]),
        r"member 'root' is a file at the top level, and a bundle archive holds exactly one",
        {},
    ),
    (
        "zip-empty",
        lambda t: make_zip(t, []),
        r"Refusing to extract .*evil\.zip: it has no members, and a bundle archive holds",
        {},
    ),
    (
        "tar-duplicate",
        lambda t: make_tar(t, [tfile("root/a", b"1"), tfile("root/a", b"2")]),
        r"member 'root/a' appears twice, so one would overwrite the other\.",
        {},
    ),
    (
        "zip-case-collision",
        lambda t: make_zip(t, [("root/a.txt", b"1"), ("root/A.TXT", b"2")]),
        r"member 'root/A\.TXT' differs only in case from 'root/a\.txt', so one would overwrite",
        {},
    ),
    (
        "tar-file-as-folder",
        lambda t: make_tar(t, [tfile("root/a", b"1"), tfile("root/a/b", b"2")]),
        r"member 'root/a/b' is inside 'root/a', which is a file, so one would overwrite",
        {},
    ),
    (
        "tar-understated-size",
        understated_tar,
        r"member 'root/a\.bin' is followed by unaccounted data, so its header understates its "
        r"size \(hiding data\) or the archive is corrupt",
        {},
    ),
    (
        "zip-understated-size",
        lambda t: zip_with_lying_size(t, random.Random(1).randbytes(65536), declared=100),
        r"member 'root/a\.bin' declares 100 bytes but stores 65,5\d\d compressed bytes, more "
        r"than that much data can take, so its header understates its size",
        {},
    ),
    (
        "zip-understated-size-small-bomb",
        lambda t: zip_with_lying_size(t, b"A" * 100_000, declared=5000),
        r"member 'root/a\.bin' has data that does not match its header \(Bad CRC-32 for file "
        r"'root/a\.bin'\), so its header lies about it or the archive is corrupt",
        {"max_bytes": 10_000},
    ),
    (
        "tar-over-max-bytes",
        lambda t: make_tar(t, [tfile("root/a", b"a" * 600), tfile("root/b", b"b" * 600)]),
        r"^Refusing to extract .*: it declares 1,200 bytes in 2 files, more than "
        r"max_bytes=1,000, and a decompression bomb would fill the disk\.\nIf you trust this "
        r"archive, pass a larger max_bytes \(default 8,589,934,592\)\.$",
        {"max_bytes": 1000},
    ),
    (
        "zip-over-max-bytes",
        lambda t: make_zip(t, [("root/a", b"\0" * 100_000)]),
        r"it declares 100,000 bytes in 1 file, more than max_bytes=1,000",
        {"max_bytes": 1000},
    ),
    (
        "tar-too-many-members",
        lambda t: make_tar(t, [tdir("root/")] + [tfile(f"root/{i}", b"") for i in range(5)]),
        r"^Refusing to extract .*: it has more than max_members=3 members, and a flood of "
        r"members can exhaust the disk's inodes\.\nIf you trust this archive, pass a larger "
        r"max_members \(default 10,000\)\.$",
        {"max_members": 3},
    ),
    (
        "zip-too-many-members",
        lambda t: make_zip(t, [(f"root/{i}", b"") for i in range(5)]),
        r"it has more than max_members=3 members",
        {"max_members": 3},
    ),
    (
        "tar-huge-pax-header",
        huge_pax_header_tar,
        r"it has a header that asks to read 2,147,483,648 bytes at once, more than the "
        r"16,777,216 allowed, and it could exhaust memory",
        {},
    ),
]


@pytest.mark.parametrize(
    ("build", "match", "limits"),
    [case[1:] for case in MALICIOUS],
    ids=[case[0] for case in MALICIOUS],
)
def test_extract_refuses_unsafe_archives_and_writes_nothing(
    tmp_path: Path, build: Callable[[Path], Path], match: str, limits: dict[str, int]
) -> None:
    archive = build(tmp_path)
    before = names(tmp_path)
    with pytest.raises(
        UnsafeArchiveError, match=match.replace(OUTSIDE, re.escape(str(tmp_path)))
    ) as err:
        extract_archive(archive, tmp_path / "out", **limits)
    assert names(tmp_path) == before  # nothing outside dest, and dest not left behind
    assert err.value.reason in str(err.value)
    if err.value.member is not None:
        assert repr(err.value.member) in str(err.value)


def test_refusal_carries_member_and_reason(tmp_path: Path) -> None:
    archive = make_tar(tmp_path, [tdir("root/"), tfile("root/../../escape.txt", b"x")])
    with pytest.raises(UnsafeArchiveError) as err:
        archive_root_name(archive)
    assert (err.value.member, err.value.reason) == ("root/../../escape.txt", "has a '..' component")


def test_extract_leaves_an_existing_dest_as_it_was(tmp_path: Path) -> None:
    archive = zip_with_lying_size(tmp_path, b"A" * 100_000, declared=5000)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_bytes(b"keep")
    with pytest.raises(UnsafeArchiveError, match="does not match its header"):
        extract_archive(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == {"keep.txt": b"keep"}


def test_extract_refuses_to_overwrite_the_root_folder(src: Path, tmp_path: Path) -> None:
    write_archive(src, tmp_path / "churn.zip", root_name="churn")
    (tmp_path / "out" / "churn").mkdir(parents=True)
    (tmp_path / "out" / "churn" / "mine.txt").write_bytes(b"mine")
    with pytest.raises(BundleError, match=r"into .*out: .*churn already exists\.\nRemove it"):
        extract_archive(tmp_path / "churn.zip", tmp_path / "out")
    assert tree(tmp_path / "out") == {"churn": None, "churn/mine.txt": b"mine"}


def test_extract_refuses_an_encrypted_zip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path, [("root/", b""), ("root/a", b"secret")])
    patch_central_directory(archive, "root/a", flags=0x1)
    with pytest.raises(UnsupportedFormatError, match=r"member 'root/a' is encrypted, which a"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@posix_only
def test_extract_refuses_an_oversized_pipe_before_reading_it_all(tmp_path: Path) -> None:
    path = make_zip(tmp_path, [("root/a", random.Random(2).randbytes(50_000))])
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        match = (
            r"^Refusing to extract the archive stream: it is over 34,732 bytes long, more "
            r"than an archive within max_bytes and max_members can take\.\nIf you trust"
        )
        with pytest.raises(UnsafeArchiveError, match=match):
            extract_archive(cat.stdout, tmp_path / "out", max_bytes=10_000, max_members=3)
        cat.stdout.read()  # let cat finish
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_extract_reports_a_truncated_archive(src: Path, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"churn.{fmt}"
    write_archive(src, path, root_name="churn")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    match = rf"churn\.{fmt} is not a readable {fmt} archive \(.+\)\.\nIt is probably truncated"
    with pytest.raises(IntegrityError, match=match):
        extract_archive(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_reports_a_file_that_is_no_archive(tmp_path: Path) -> None:
    path = tmp_path / "churn.tar.gz"
    path.write_bytes(b"<html>Access denied</html>")
    match = r"churn\.tar\.gz is neither a tar\.gz nor a zip archive: it starts with b'<htm'\."
    with pytest.raises(IntegrityError, match=match):
        extract_archive(path, tmp_path / "out")


def test_extract_checks_fmt_against_the_content(src: Path, tmp_path: Path) -> None:
    write_archive(src, tmp_path / "churn.zip", root_name="churn")
    match = r"churn\.zip is a zip archive, but fmt='tar\.gz' was passed\.\nPass fmt='zip'"
    with pytest.raises(UnsupportedFormatError, match=match):
        extract_archive(tmp_path / "churn.zip", tmp_path / "out", fmt="tar.gz")


def test_extract_follows_the_content_not_the_name(src: Path, tmp_path: Path) -> None:
    write_archive(src, tmp_path / "churn.zip", root_name="churn")
    shutil.move(tmp_path / "churn.zip", tmp_path / "churn.tar.gz")
    assert tree(extract_archive(tmp_path / "churn.tar.gz", tmp_path / "out")) == tree(src)
