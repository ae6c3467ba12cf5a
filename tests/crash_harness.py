"""Crash harness: run one storage operation again and again, each time killed at its Nth step.

Run as a script (the child of a test), it is a small fork server::

    python crash_harness.py OP ROOT SOURCE VERSION MODE [STORAGE_OPTIONS_JSON]

and reads one number N per line on stdin (optionally followed by a ROOT for that run
only). For each, it forks a child that runs OP and dies
with ``os._exit(86)`` just before its Nth step, and prints the child's exit code (86: it
crashed; 0: OP finished in fewer than N steps; anything else: OP failed on its own). The
forked child starts from an interpreter that already imported everything, so each crash
point costs milliseconds.

OP is ``save`` (a new version), ``overwrite`` (``overwrite=True``), ``tag`` (move the alias
``production`` to VERSION), ``gc`` (reclaim ROOT's leftovers) or ``archive`` (write VERSION of
ROOT to SOURCE, an archive path). Otherwise SOURCE is a published version directory whose
files are saved.
MODE says what a step is:

- ``audit``: every audit event (``sys.addaudithook``) that touches the file system, on a
  local root: each ``open``, rename, remove, mkdir, link, rmtree, lock and atomic swap, and
  each ``os.fsync`` (which raises no audit event: the harness wraps it);
- ``audit-noswap``: the same, on a system without an atomic folder swap (``exchange``
  reports it cannot, as on NFS or Windows), so the set-aside protocol runs instead;
- ``calls``: every call that changes an object store, through `Faulty`, an fsspec filesystem
  (``faulty://``) that delegates to the real s3fs client of STORAGE_OPTIONS and dies before
  its Nth ``put_file`` / ``pipe_file`` / ``rm_file`` (``rm`` is expanded into ``rm_file``
  calls, so a crash can also stop a multi-object delete half way).

The test module imports `publish_copy` from here: the same code runs in-process (retries)
and in the children (crashes).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec

import bundle
from bundle.format.layout import MANIFEST_FILE
from bundle.format.manifest import read_manifest, write_manifest
from bundle.storage import local, open_root

CRASHED = 86
FILE_SYSTEM_EVENTS = {
    "open",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.chmod",
    "os.utime",
    "os.scandir",
    "os.listdir",
    "shutil.rmtree",
    "shutil.copyfile",
    "fcntl.flock",
    "bundle.storage.exchange",
}


def publish_copy(
    root: str, source: Path, version: str | None, *, overwrite: bool, **options: Any
) -> str:
    """Save the files of the version directory `source` under `root` as `Bundle.save` does:
    a staging folder of the root, filled, then published with the manifest written last."""
    source = Path(source)
    manifest = read_manifest(source)

    def finalize(directory: Path, chosen: str) -> None:
        write_manifest(replace(manifest, version=chosen), directory)

    target = open_root(root, **options)
    with target.staging() as staging:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_dir():
                (staging / relative).mkdir()
            elif relative.as_posix() != MANIFEST_FILE:
                shutil.copyfile(path, staging / relative)
        return target.publish(staging, version, finalize=finalize, overwrite=overwrite)


class Faulty(fsspec.AbstractFileSystem):
    """An fsspec filesystem over a real S3 client that dies before its Nth change."""

    protocol = "faulty"
    crash_at = 0  # set in each forked child
    changes = 0

    def __init__(self, **options: Any):
        super().__init__(**options)
        import s3fs

        self.inner = s3fs.S3FileSystem(**options)

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return path.removeprefix("faulty://").rstrip("/")

    def _change(self) -> None:
        Faulty.changes += 1
        if Faulty.changes == Faulty.crash_at:
            os._exit(CRASHED)

    # changes: each one a crash point
    def put_file(self, lpath, rpath, **kwargs):
        self._change()
        return self.inner.put_file(lpath, rpath, **kwargs)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        self._change()
        return self.inner.pipe_file(path, value, mode=mode, **kwargs)

    def rm_file(self, path):
        self._change()
        return self.inner.rm_file(path)

    def rm(self, path, recursive=False, maxdepth=None):
        for item in path if isinstance(path, list) else [path]:
            files = self.inner.find(item) if recursive else [item]
            for file in files or [item]:
                self.rm_file(file)

    # reads: delegated as they are
    def invalidate_cache(self, path=None):
        return self.inner.invalidate_cache(path)

    def glob(self, path, **kwargs):
        return self.inner.glob(path, **kwargs)

    def exists(self, path, **kwargs):
        return self.inner.exists(path, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        return self.inner.cat_file(path, start=start, end=end, **kwargs)

    def get_file(self, rpath, lpath, **kwargs):
        return self.inner.get_file(rpath, lpath, **kwargs)

    def ls(self, path, detail=True, **kwargs):
        return self.inner.ls(path, detail=detail, **kwargs)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        return self.inner.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)

    def info(self, path, **kwargs):
        return self.inner.info(path, **kwargs)


def _run(op: str, root: str, source: Path, version: str, options: dict[str, Any]) -> None:
    if op == "tag":
        bundle.tag(root, "production", version, **options)
    elif op == "gc":
        bundle.gc(root, dry_run=False, **options)
    elif op == "archive":
        bundle.archive(root, str(source), version=version, **options)
    else:
        publish_copy(root, source, version, overwrite=op == "overwrite", **options)


def _crash_at(count: int, mode: str) -> None:
    """Arrange for this (forked) process to die just before its `count`-th step."""
    if mode == "calls":
        Faulty.crash_at = count
        return
    seen = [0]

    def step() -> None:
        seen[0] += 1
        if seen[0] == count:
            os._exit(CRASHED)

    def hook(event: str, _args: tuple) -> None:
        if event in FILE_SYSTEM_EVENTS:
            step()

    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # os.fsync raises no audit event: count it here
        step()
        real_fsync(fd)

    os.fsync = fsync
    sys.addaudithook(hook)


def main() -> None:
    op, root, source, version, mode, *rest = sys.argv[1:]
    options = json.loads(rest[0]) if rest else {}
    if mode == "audit-noswap":
        local.exchange = lambda first, second: False  # a system without an atomic swap
    if mode == "calls":
        fsspec.register_implementation("faulty", Faulty, clobber=True)
    # Import now what the operation imports lazily: module files are no crash points.
    if op in ("gc", "archive"):
        bundle.list_versions(root, **options)
        bundle.gc(root, **options)
    else:
        write_manifest(read_manifest(Path(source)), Path(tempfile.mkdtemp()))
    for line in sys.stdin:
        count, *other_root = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                _crash_at(int(count), mode)
                _run(op, other_root[0] if other_root else root, Path(source), version, options)
            except BaseException as exc:
                sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
                sys.stderr.flush()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
