"""Aliases (``production``, ``canary``): named pointers to versions, moved compare-and-swap.

Each move of an alias is one new record, ``<root>/.aliases/<alias>/<n>.json`` with ``n`` one
more than the latest, created only if absent: ``O_EXCL``-style ``link()`` on a local disk, a
conditional PUT (``If-None-Match: *``) on S3 and fsspec's ``mode="create"`` elsewhere. Of
two taggers that read the same latest record, exactly one creates the next; the other reads
again and creates the one after. No move is lost, and a reader sees whole records only.

A record is ``{"alias", "version", "updated", "history": [{"version", "time"}, ...]}`` and
carries the whole history, so the latest record alone answers every question: older ones
are superseded copies that ``bundle gc`` may delete. ``<root>/.aliases/<alias>.json``, the
single file of earlier releases, is read as the record before the first numbered one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..errors import StorageError
from ..format.layout import ALIASES_DIR
from .durable import fsync_dir, work_file

__all__ = ["TEMP_PREFIX", "AliasStore", "LocalKeys", "RemoteKeys", "SupersededRecord"]

TEMP_PREFIX = ".tmp-"  # a record being written, locked by its writer (see durable.work_file)

_RECORD = re.compile(r"^(\d{1,18})\.json$")
_ATTEMPTS = 1000


class Keys(Protocol):
    """The few operations aliases need, on root-relative "/"-separated keys."""

    def names(self, folder: str) -> list[str]: ...
    def read(self, key: str) -> bytes: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def remove(self, key: str) -> None: ...
    def where(self, key: str) -> str: ...


class LocalKeys:
    """Keys as files under a local root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def names(self, folder: str) -> list[str]:
        try:
            return [entry.name for entry in os.scandir(self.root / folder)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def create(self, key: str, data: bytes) -> bool:
        """Write `data` to a temp file, flush it, and hard-link it to `key` if `key` is free.

        ``link()`` fails when the name exists and publishes the whole file at once: a crash
        leaves at most a ``.tmp-*`` file, never a partial record.
        """
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with work_file(path.parent, TEMP_PREFIX) as (tmp, fd):
            with open(fd, "wb", closefd=False) as out:
                out.write(data)
                out.flush()
                os.fsync(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        fsync_dir(path.parent)
        return True

    def remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def where(self, key: str) -> str:
        return str(self.root / key)


class RemoteKeys:
    """Keys as objects under an fsspec path."""

    def __init__(self, fs: Any, base: str, location: str):
        self.fs, self.base, self.location = fs, base.rstrip("/"), location.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}" if self.base else key

    def names(self, folder: str) -> list[str]:
        self.fs.invalidate_cache()  # another process may have moved the alias
        try:
            listed = self.fs.ls(self._path(folder), detail=False)
        except FileNotFoundError:
            return []
        return [name.rstrip("/").rsplit("/", 1)[-1] for name in listed]

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def where(self, key: str) -> str:
        return f"{self.location}/{key}"


@dataclass(frozen=True)
class SupersededRecord:
    """An alias record older than the alias's latest one (its history is in the latest)."""

    alias: str
    key: str
    where: str


class AliasStore:
    """The aliases of one root."""

    def __init__(self, keys: Keys, location: str):
        self.keys = keys
        self.location = location

    # ------------------------------------------------------------ reading
    def names(self) -> list[str]:
        """Every alias with at least one record, sorted."""
        found = set()
        for name in self.keys.names(ALIASES_DIR):
            if name.startswith("."):
                continue
            found.add(name.removesuffix(".json"))
        return sorted(found)

    def read(self, alias: str) -> dict[str, Any] | None:
        """The alias's latest record, or None if it has none.

        Raises:
            StorageError: the latest record is not a valid alias record.
        """
        return self._latest(alias)[1]

    def _numbers(self, alias: str) -> list[int]:
        return sorted(
            int(match.group(1))
            for name in self.keys.names(f"{ALIASES_DIR}/{alias}")
            if (match := _RECORD.match(name))
        )

    def _latest(self, alias: str) -> tuple[int, dict[str, Any] | None]:
        """``(number, record)`` of the latest record; number 0 is the legacy single file.

        Raises:
            StorageError: the latest record is not a valid alias record.
        """
        for _attempt in range(_ATTEMPTS):
            numbers = self._numbers(alias)
            try:
                return self._record(alias, numbers[-1] if numbers else 0)
            except FileNotFoundError:
                if not numbers:
                    return 0, None
                # superseded and removed by `bundle gc` meanwhile: list again
        raise StorageError(f"Could not read alias {alias!r} under {self.location}: it kept moving.")

    def _latest_valid(self, alias: str) -> tuple[int, dict[str, Any] | None]:
        """``(latest number, newest valid record)``: a malformed record does not stop a move."""
        numbers = self._numbers(alias)
        for number in [*reversed(numbers), 0]:
            with contextlib.suppress(FileNotFoundError, StorageError):
                return (numbers[-1] if numbers else 0), self._record(alias, number)[1]
        return (numbers[-1] if numbers else 0), None

    def _record(self, alias: str, number: int) -> tuple[int, dict[str, Any] | None]:
        key = _record_key(alias, number) if number else f"{ALIASES_DIR}/{alias}.json"
        try:
            data = self.keys.read(key)
        except IsADirectoryError:
            return 0, None
        return number, self._parse(alias, key, data)

    def _parse(self, alias: str, key: str, data: bytes) -> dict[str, Any]:
        where = self.keys.where(key)
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._malformed(alias, where, f"not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise self._malformed(alias, where, f"a JSON {type(record).__name__}, not an object")
        if not isinstance(record.get("version"), str):
            raise self._malformed(alias, where, 'no "version" string')
        history = record.get("history", [])
        if not isinstance(history, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("version"), str) for entry in history
        ):
            raise self._malformed(alias, where, '"history" is not a list of {"version", "time"}')
        return record

    def _malformed(self, alias: str, where: str, why: str) -> StorageError:
        return StorageError(
            f"The record of alias {alias!r} at {where} is not a valid alias record ({why}).\n"
            f"Point the alias again (bundle tag {self.location} {alias} VERSION): the new "
            "record supersedes this one. Or delete that file."
        )

    # ------------------------------------------------------------ writing
    def write(self, alias: str, version: str) -> dict[str, Any]:
        """Append a move of `alias` to `version`; compare-and-swap on the record number."""
        for _attempt in range(_ATTEMPTS):
            number, previous = self._latest_valid(alias)
            now = _now()
            history = list((previous or {}).get("history", []))
            record = {
                "alias": alias,
                "version": version,
                "updated": now,
                "history": [*history, {"version": version, "time": now}],
            }
            data = (json.dumps(record, indent=2) + "\n").encode()
            if self.keys.create(_record_key(alias, number + 1), data):
                return record
        raise StorageError(
            f"Could not move alias {alias!r} under {self.location}: {_ATTEMPTS} other moves "
            "won the race first. Try again."
        )

    # ------------------------------------------------------------ clean-up
    def superseded(self) -> list[SupersededRecord]:
        """Records older than their alias's latest (and legacy files once records exist)."""
        found = []
        for alias in self.names():
            numbers = self._numbers(alias)
            if not numbers:
                continue
            keys = [_record_key(alias, n) for n in numbers[:-1]]
            if f"{alias}.json" in self.keys.names(ALIASES_DIR):
                keys.append(f"{ALIASES_DIR}/{alias}.json")
            found += [SupersededRecord(alias, key, self.keys.where(key)) for key in keys]
        return found


def _record_key(alias: str, number: int) -> str:
    return f"{ALIASES_DIR}/{alias}/{number:010d}.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
