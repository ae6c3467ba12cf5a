"""Read and write tabular files in record batches, never whole (Parquet, CSV, JSON Lines).

Peak memory depends on the batch size, not on the file size: Parquet is read one record
batch at a time with `pyarrow.parquet.ParquetFile.iter_batches`, CSV with pyarrow's
streaming reader, JSON Lines line by line; outputs are appended batch by batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SchemaError

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

__all__ = ["BatchWriter", "count_rows", "csv_column_types", "file_format", "iter_batches"]


def file_format(path: str | Path, explicit: str | None = None) -> str:
    """``parquet`` | ``csv`` | ``jsonl``, from `explicit` or the file's suffix."""
    if explicit:
        if explicit not in set(FORMATS.values()):
            raise ValueError(f"Unknown format {explicit!r}; expected parquet, csv or jsonl.")
        return explicit
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"Cannot tell the format of {path}: its suffix {suffix!r} is not one of "
            f"{', '.join(sorted(FORMATS))}. Pass format='parquet', 'csv' or 'jsonl'."
        )
    return FORMATS[suffix]


def count_rows(path: str | Path, fmt: str) -> int | None:
    """The number of rows, when it is cheap to know (Parquet metadata); else None."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def csv_column_types(
    schema: Mapping[str, Any] | None, ids: Sequence[str] = (), *, numbers_as_text: bool = False
) -> dict[str, Any]:
    """pyarrow types for a CSV file's columns from an input schema's dict form, so that
    every block is read as training typed it; `ids` (and unknown columns) as text.

    `numbers_as_text` reads numeric columns as text, for readers that parse them leniently
    (drift counts ``ERR`` in a numeric column as missing; a typed read refuses the file).
    """
    import pyarrow as pa

    number = pa.string() if numbers_as_text else pa.float64()
    by_kind = {
        "float": number,
        "integer": number,
        "string": pa.string(),
        "categorical": pa.string(),
        "bool": pa.bool_(),
    }
    types = {
        str(column["name"]): by_kind[column["kind"]]
        for column in (schema or {}).get("columns", [])
        if column.get("kind") in by_kind
    }
    types.update({column: pa.string() for column in ids if column not in types})
    return types


def iter_batches(
    path: str | Path,
    *,
    batch_size: int,
    fmt: str,
    column_types: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield pandas DataFrames of at most `batch_size` rows from a tabular file.

    Args:
        column_types: ``{column: pyarrow type}`` for CSV, so that every block is read with
            the types training used (pyarrow would otherwise infer them block by block).
    """
    readers = {"parquet": _parquet_batches, "csv": _csv_batches, "jsonl": _jsonl_batches}
    yield from readers[fmt](Path(path), batch_size, column_types or {})


def _parquet_batches(path: Path, batch_size: int, _types: Mapping[str, Any]) -> Iterator[Any]:
    import pyarrow.parquet as pq

    # Stream column chunks instead of pre-buffering whole row groups: a row group of a
    # large file can hold hundreds of MiB, which would set the peak memory of scoring.
    with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as handle:
        for batch in handle.iter_batches(batch_size=batch_size, use_threads=False):
            yield batch.to_pandas()


def _csv_batches(path: Path, batch_size: int, column_types: Mapping[str, Any]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # A block of ~64 bytes per row is a fair guess; batches are re-cut to batch_size below.
    read_options = pacsv.ReadOptions(block_size=max(1 << 20, min(batch_size * 64, 64 << 20)))
    convert = pacsv.ConvertOptions(column_types=dict(column_types), strings_can_be_null=True)
    try:
        reader = pacsv.open_csv(path, read_options=read_options, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, exc) from exc
    pending: list[Any] = []
    pending_rows = 0
    for batch in _translated(reader, path):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= batch_size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, batch_size).to_pandas()
            rest = table.slice(batch_size)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending).to_pandas()


def _translated(reader: Any, path: Path) -> Iterator[Any]:
    """The reader's batches, with pyarrow's conversion errors turned into SchemaError."""
    import pyarrow as pa

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise _csv_error(path, exc) from exc
        yield batch


def _csv_error(path: Path, exc: Exception) -> SchemaError:
    """A CSV value that cannot be read as its column's training type, as a SchemaError."""
    detail = str(exc).strip()
    return SchemaError(
        f"{path} has a value that does not fit its column's training type: {detail}\n"
        "Column numbers count from 0 and row numbers from the header. Fix the value, or "
        "leave it empty for a missing value.",
    )


def _jsonl_batches(path: Path, batch_size: int, _types: Mapping[str, Any]) -> Iterator[Any]:
    import pandas as pd

    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{line_number} is not valid JSON: {exc}") from exc
            if len(records) == batch_size:
                yield pd.DataFrame.from_records(records)
                records = []
    if records:
        yield pd.DataFrame.from_records(records)


class BatchWriter:
    """Append DataFrames to a Parquet, CSV or JSON Lines file, atomically on close.

    Rows go to a temporary file next to `path`, renamed into place by `close()` only if
    every batch was written: an interrupted run never leaves a truncated output file.
    """

    def __init__(self, path: str | Path, *, fmt: str, schema: Any = None):
        self.path = Path(path)
        self.fmt = fmt
        # A pyarrow schema for Parquet: every batch is written with these column types, so
        # a batch whose column is all missing (null) still matches the others.
        self.schema = schema
        self._tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._writer: Any = None
        self._handle: Any = None

    def write(self, frame: Any) -> None:
        """Append one DataFrame (the same columns every time)."""
        import pyarrow as pa

        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._tmp, table.schema)
            self._writer.write_table(table)
        elif self.fmt == "csv":
            header = self._handle is None
            if header:
                self._handle = open(self._tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115
            frame.to_csv(self._handle, index=False, header=header)
        else:
            if self._handle is None:
                self._handle = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115
            for record in frame.to_dict(orient="records"):
                self._handle.write(json.dumps(record, default=_json_default) + "\n")

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._writer is not None:
            self._writer.close()
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        if self._writer is None and self._handle is None:
            open(self._tmp, "wb").close()  # no rows: still an (empty) output
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial output."""
        for resource in (self._writer, self._handle):
            if resource is not None:
                resource.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return str(value)
