"""Serve a bundle over HTTP: the Open Inference Protocol (V2), a plain JSON endpoint, metrics.

A thin edge over ``Bundle.load`` + ``Bundle.predict``: every request is validated and
coerced on its own by the bundle's input contract (so one bad request gets its own 400),
concurrent requests are merged into one model call by a dynamic batcher
(`bundle._batching`), and each request gets exactly its own rows back.

Endpoints::

    GET  /v2                                       server metadata
    GET  /v2/health/live                           200 while the process serves
    GET  /v2/health/ready                          200 once the bundle is loaded and warmed up
    GET  /v2/models/{name}[/versions/{version}]    model metadata: inputs, outputs, versions
    GET  /v2/models/{name}[/versions/{version}]/ready
    POST /v2/models/{name}[/versions/{version}]/infer
    POST /predict                                  {"records": [...]} | {"columns": {...}}
                                                   | {"instances": [...]} -> {"predictions"}
    GET  /metrics                                  Prometheus text format

Tabular bundles take one input tensor per column (``BYTES`` for strings, ``FP32``/``FP64``/
``INT64``/``BOOL``... for numbers, shape ``[n]`` or ``[n, 1]``); array bundles take one
tensor named ``input`` with the batch axis first. The output ``predictions`` holds the
postprocessed predictions; ``scores`` (the model's raw outputs) is returned when the request
names it in ``outputs``. The binary tensor data extension is supported both ways.

Errors answer ``{"error": "..."}``: 400 for input problems (`SchemaError`, `StepError`, a
malformed request), 404 for an unknown model, version or path, 413 for a body over the limit,
503 while overloaded, and 500 with a request id (the traceback goes to the server log).

Metrics: with one worker, each process keeps its own metrics. With ``workers > 1``, `run`
turns on prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a temporary
directory unless already set), so any worker's ``/metrics`` reports the sum over all workers.

Example:
    >>> from bundle.serve import create_app, run
    >>> app = create_app(Bundle.load("models/churn"))       # an ASGI app, to embed
    >>> run("models/churn", port=8080, workers=2)           # what `bundle serve` calls
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import math
import os
import shutil
import signal
import struct
import tempfile
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import bundle as _bundle
from bundle import Bundle, BundleError, SchemaError, StepError

try:
    import prometheus_client
    import uvicorn
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"bundle.serve needs the 'serve' extra ({_exc.name} is not installed).\n"
        "Install it with: pip install 'keras-bundle[serve]'"
    ) from _exc

from ._batching import BatchStats, DynamicBatcher, Overloaded, concat_rows, slice_rows

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_QUEUE_ROWS",
    "DEFAULT_MAX_WAIT_MS",
    "JsonFormatter",
    "create_app",
    "log_config",
    "run",
]

DEFAULT_MAX_BATCH_SIZE = 256  # rows per model call
DEFAULT_MAX_WAIT_MS = 2.0  # how long an idle server waits for a request to get company
DEFAULT_MAX_QUEUE_ROWS = 65_536  # rows waiting before new requests get 503
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_GRACEFUL_SHUTDOWN_S = 30.0
_STARTUP_FAILURE = getattr(uvicorn.config, "STARTUP_FAILURE", 3)

CONFIG_ENV = "KERAS_BUNDLE_SERVE_CONFIG"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HEADER_LENGTH = "inference-header-content-length"
REQUEST_ID = "x-request-id"

logger = logging.getLogger("bundle.serve")
access_logger = logging.getLogger("bundle.serve.access")

# Open Inference Protocol datatypes <-> numpy.
_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NUMPY_TO_DATATYPE = {dtype: name for name, dtype in _DATATYPES.items() if name != "BYTES"}
_KIND_DATATYPES = {"string": "BYTES", "categorical": "BYTES", "datetime": "BYTES", "any": "BYTES"}


class _RequestError(Exception):
    """A request the server refuses: answered with `status` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, kind: str):
        super().__init__(message)
        self.status = status
        self.kind = kind


def _datatype(dtype: Any) -> str:
    """The protocol datatype of a numpy dtype (text and objects are BYTES)."""
    dtype = np.dtype(dtype)
    return _NUMPY_TO_DATATYPE.get(
        dtype.newbyteorder("=") if dtype.byteorder == ">" else dtype, "BYTES"
    )


# --------------------------------------------------------------------------- the served model


@dataclass
class _Tensor:
    name: str
    datatype: str
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class _Served:
    """A loaded bundle seen through the protocol: its tensors and how to read requests."""

    bundle: Any
    name: str
    version: str
    schema: Any
    schema_dict: dict[str, Any] | None
    inputs: list[_Tensor]
    outputs: dict[str, _Tensor] = field(default_factory=dict)
    default_outputs: list[str] = field(default_factory=list)
    has_postprocess: bool = False

    @classmethod
    def of(cls, loaded: Any) -> _Served:
        manifest = loaded.manifest
        schema = loaded.input_schema
        schema_dict = schema.to_dict() if schema is not None else manifest.input_schema
        served = cls(
            bundle=loaded,
            name=str(manifest.name),
            version=str(manifest.version),
            schema=schema,
            schema_dict=schema_dict,
            inputs=_input_tensors(schema_dict, manifest.model["inputs"]),
            has_postprocess=bool(manifest.postprocess),
        )
        served._outputs_from_manifest(manifest.model["outputs"])
        return served

    # ------------------------------------------------------------------ outputs
    def _outputs_from_manifest(self, specs: list[dict[str, Any]]) -> None:
        """Output tensors as far as the manifest tells (refined by `learn_outputs`)."""
        raw = {
            spec["name"]: _Tensor(spec["name"], _datatype(spec["dtype"]), _dims(spec["shape"]))
            for spec in specs
        }
        if len(raw) == 1:
            only = next(iter(raw.values()))
            raw = {"scores": _Tensor("scores", only.datatype, only.shape)}
        if self.has_postprocess:
            self.outputs = {"predictions": _Tensor("predictions", "BYTES", [-1]), **raw}
            self.default_outputs = ["predictions"]
        else:
            if len(raw) == 1:
                raw = {"predictions": _Tensor("predictions", *_pair(raw["scores"]))}
            self.outputs = raw
            self.default_outputs = list(raw)

    def learn_outputs(self, predictions: Any, scores: Any) -> None:
        """Take output datatypes and shapes from a real prediction (the warm-up's)."""
        named = _named(predictions, "predictions")
        if scores is not None and self.has_postprocess:
            named.update(_named(scores, "scores"))
        for name, array in named.items():
            array = np.asarray(array)
            self.outputs[name] = _Tensor(name, _datatype(array.dtype), [-1, *array.shape[1:]])
        if not self.has_postprocess:
            self.default_outputs = list(_named(predictions, "predictions"))

    # ------------------------------------------------------------------ inputs
    def coerce(self, raw: Any, *, strict: bool) -> tuple[Any, int]:
        """The canonical input and its row count; raises SchemaError on bad input."""
        if self.schema is None:  # a bundle saved without an input contract
            canonical = np.asarray(raw)
            if canonical.ndim == 0:
                raise SchemaError("Input must have a batch axis: send a list of samples.")
            return canonical, int(canonical.shape[0])
        canonical = self.schema.coerce(raw, strict=strict)
        return canonical, int(self.schema.n_rows(canonical))

    def raw_from_tensors(self, tensors: dict[str, np.ndarray]) -> Any:
        """Protocol input tensors as the raw form the input contract reads."""
        kind = (self.schema_dict or {}).get("kind", "array")
        if kind == "tabular":
            return {name: _column(name, array) for name, array in tensors.items()}
        if kind == "multi":
            raw: dict[str, Any] = {}
            for name, sub in self.schema_dict["inputs"].items():
                if sub.get("kind") == "tabular":
                    prefix = f"{name}."
                    raw[name] = {
                        key[len(prefix) :]: _column(key, array)
                        for key, array in tensors.items()
                        if key.startswith(prefix)
                    }
                elif name in tensors:
                    raw[name] = tensors[name]
            known = {t.name for t in self.inputs}
            extra = sorted(set(tensors) - known)
            if extra:
                raise SchemaError(
                    f"Unknown input tensor(s) {', '.join(map(repr, extra))}; this model takes "
                    f"{', '.join(sorted(known))}."
                )
            return raw
        if len(tensors) != 1:
            raise SchemaError(
                f"Model {self.name!r} takes one input tensor ({self.inputs[0].name!r}) with the "
                f"batch axis first; the request has {len(tensors)}: "
                f"{', '.join(map(repr, sorted(tensors)))}."
            )
        return next(iter(tensors.values()))

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "keras-bundle",
            "inputs": [tensor.to_dict() for tensor in self.inputs],
            "outputs": [tensor.to_dict() for tensor in self.outputs.values()],
        }

    def warm_up_input(self) -> Any:
        """One valid raw row made from the input contract (None if it cannot be made)."""
        if self.schema_dict is None:
            return None
        return _example_of(self.schema_dict)


def _pair(tensor: _Tensor) -> tuple[str, list[int]]:
    return tensor.datatype, tensor.shape


def _dims(shape: list[int | None]) -> list[int]:
    return [-1 if dim is None else int(dim) for dim in shape]


def _named(result: Any, default: str) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return {str(key): value for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        return {f"{default}_{i}": value for i, value in enumerate(result)}
    return {default: result}


def _column_datatype(column: Mapping[str, Any]) -> str:
    kind = column.get("kind", "any")
    if kind in _KIND_DATATYPES or not column.get("dtype"):
        return _KIND_DATATYPES.get(kind, "BYTES")
    try:
        return _datatype(np.dtype(column["dtype"]))
    except TypeError:  # a pandas extension dtype: nullable ints and floats, booleans
        return {"integer": "INT64", "float": "FP64", "bool": "BOOL"}.get(kind, "BYTES")


def _input_tensors(schema: Mapping[str, Any] | None, model_inputs: list[dict]) -> list[_Tensor]:
    if schema is None:
        spec = model_inputs[0]
        return [_Tensor("input", _datatype(spec["dtype"]), _dims(spec["shape"]))]
    kind = schema.get("kind")
    if kind == "tabular":
        return [_Tensor(str(c["name"]), _column_datatype(c), [-1]) for c in schema["columns"]]
    if kind == "multi":
        tensors: list[_Tensor] = []
        for name, sub in schema["inputs"].items():
            for tensor in _input_tensors(sub, model_inputs):
                tensor_name = name if sub.get("kind") != "tabular" else f"{name}.{tensor.name}"
                tensors.append(_Tensor(tensor_name, tensor.datatype, tensor.shape))
        return tensors
    dtype = schema.get("dtype")
    datatype = _datatype(np.dtype(dtype)) if dtype else "BYTES"
    return [_Tensor("input", datatype, [-1, *_dims(list(schema.get("shape", [])))])]


def _column(name: str, array: np.ndarray) -> np.ndarray:
    """One tabular column from a tensor of shape [n] or [n, 1]."""
    if array.ndim == 1:
        return array
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    raise SchemaError(
        f"Input tensor {name!r} has shape {list(array.shape)}, but a tabular bundle takes one "
        "tensor per column with shape [n] or [n, 1] (n rows).",
        column=name,
    )


def _example_value(column: Mapping[str, Any]) -> Any:
    for key in ("closed_categories", "dtype_categories", "categories"):
        if column.get(key):
            return column[key][0]
    kind = column.get("kind")
    if kind in ("float", "integer"):
        value = column.get("minimum")
        return 0 if value is None else value
    if kind == "bool":
        return False
    if kind == "string":
        return "a"
    if kind == "datetime":
        tz = "[" in str(column.get("dtype")) and "," in str(column.get("dtype"))
        return "2000-01-01T00:00:00+00:00" if tz else "2000-01-01T00:00:00"
    return None


def _example_of(schema: Mapping[str, Any]) -> Any:
    kind = schema.get("kind")
    if kind == "tabular":
        return [{column["name"]: _example_value(column) for column in schema["columns"]}]
    if kind == "multi":
        return {name: _example_of(sub) for name, sub in schema["inputs"].items()}
    shape = [1, *(dim or 1 for dim in schema.get("shape", []))]
    dtype = schema.get("dtype") or "float32"
    return np.zeros(shape, dtype=dtype)


# --------------------------------------------------------------------------- protocol codec


def _parse_json(data: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _RequestError(
            400, f"The request body is not valid JSON: {exc}.", kind="request"
        ) from exc


def _decode_bytes_tensor(buffer: memoryview, count: int, name: str) -> np.ndarray:
    """BYTES binary data: each element is a 4-byte little-endian length, then the bytes."""
    out = np.empty(count, dtype=object)
    offset = 0
    try:
        for i in range(count):
            (length,) = struct.unpack_from("<I", buffer, offset)
            offset += 4
            if offset + length > len(buffer):
                raise ValueError("an element runs past the end of the data")
            out[i] = _text(bytes(buffer[offset : offset + length]))
            offset += length
    except (struct.error, ValueError) as exc:
        raise _RequestError(
            400, f"Input {name!r}: its BYTES binary data is malformed ({exc}).", kind="request"
        ) from exc
    if offset != len(buffer):
        raise _RequestError(
            400,
            f"Input {name!r}: its BYTES binary data holds more than the {count} element(s) "
            "its shape says.",
            kind="request",
        )
    return out


def _text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _read_tensor(spec: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input tensor of an infer request: (name, array shaped as declared, new offset)."""
    if not isinstance(spec, Mapping):
        raise _RequestError(400, "Each entry of 'inputs' must be a JSON object.", kind="request")
    name = spec.get("name")
    shape = spec.get("shape")
    datatype = spec.get("datatype")
    if not isinstance(name, str):
        raise _RequestError(400, "An input tensor has no 'name'.", kind="request")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _RequestError(
            400,
            f"Input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}.",
            kind="request",
        )
    if datatype not in _DATATYPES:
        raise _RequestError(
            400,
            f"Input {name!r}: unknown datatype {datatype!r}; the protocol's datatypes are "
            f"{', '.join(_DATATYPES)}.",
            kind="request",
        )
    count = math.prod(shape)
    parameters = spec.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, Mapping) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise _RequestError(
                400,
                f"Input {name!r}: binary_data_size {size!r} does not fit the "
                f"{len(binary) - offset:,} bytes of binary data left in the request.",
                kind="request",
            )
        chunk = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            array = _decode_bytes_tensor(chunk, count, name)
        else:
            dtype = _DATATYPES[datatype].newbyteorder("<")
            if size != count * dtype.itemsize:
                raise _RequestError(
                    400,
                    f"Input {name!r}: {size:,} bytes of binary data, but shape {shape} of "
                    f"{datatype} needs {count * dtype.itemsize:,}.",
                    kind="request",
                )
            array = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))
        return name, array.reshape(shape), offset
    if "data" not in spec:
        raise _RequestError(
            400, f"Input {name!r} has neither 'data' nor binary data.", kind="request"
        )
    array = _json_tensor(name, spec["data"], datatype, count)
    return name, array.reshape(shape), offset


def _json_tensor(name: str, data: Any, datatype: str, count: int) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != count:
        raise _RequestError(
            400,
            f"Input {name!r}: its shape holds {count:,} element(s), but 'data' has {len(flat):,}.",
            kind="request",
        )
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array
    dtype = _DATATYPES[datatype]
    try:
        if dtype.kind == "f":  # null stands for a missing value (NaN)
            flat = [math.nan if value is None else value for value in flat]
        if dtype.kind in "iub" and any(isinstance(v, float) for v in flat):
            raise TypeError("it holds fractional numbers")
        if dtype.kind == "b" and not all(isinstance(v, bool) for v in flat):
            raise TypeError("BOOL data must be true or false")
        return np.array(flat, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SchemaError(
            f"Input {name!r}: its data cannot be read as {datatype} ({str(exc).splitlines()[0]}).",
            column=name,
        ) from exc


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _output_tensor(name: str, value: Any, *, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    array = np.asarray(value)
    datatype = _datatype(array.dtype)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        if datatype == "BYTES":
            data = _encode_bytes_tensor(array)
        else:
            data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        tensor["parameters"] = {"binary_data_size": len(data)}
        return tensor, data
    flat = array.ravel()
    if datatype == "BYTES":
        tensor["data"] = [
            base64.b64encode(item).decode() if isinstance(item, bytes) else str(item)
            for item in flat
        ]
    else:
        tensor["data"] = flat.tolist()
    return tensor, None


def _jsonable(value: Any) -> Any:
    """Predictions as JSON: arrays as (nested) lists, dicts of arrays as dicts."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "to_dict"):  # a DataFrame of predictions
        return value.to_dict(orient="records")
    array = np.asarray(value)
    if array.dtype.kind in "SO":
        return (
            [_jsonable(item) for item in array]
            if array.ndim > 1
            else [item.decode() if isinstance(item, bytes) else item for item in array.tolist()]
        )
    return array.tolist()


def _json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None):
    content = json.dumps(body, default=_json_default, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------- metrics


class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "bundle_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "bundle_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.errors = Counter(
            "bundle_errors",
            "Requests answered with an error, by kind (schema, step, request, not_found, "
            "too_large, overloaded, not_ready, internal).",
            ["kind"],
            registry=registry,
        )
        self.batch_rows = Histogram(
            "bundle_batch_rows",
            "Rows per model call (after merging concurrent requests).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384),
            registry=registry,
        )
        self.batch_requests = Histogram(
            "bundle_batch_requests",
            "Requests merged into one model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "bundle_batch_duration_seconds",
            "Time of one merged predict (preprocessing, model, postprocessing).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=registry,
        )
        self.rows = Counter("bundle_rows", "Rows predicted.", registry=registry)

    def batch(self, stats: BatchStats) -> None:
        self.batch_rows.observe(stats.rows)
        self.batch_requests.observe(stats.requests)
        self.batch_seconds.observe(stats.seconds)
        if not stats.failed:
            self.rows.inc(stats.rows)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return prometheus_client.generate_latest(registry)
        return prometheus_client.generate_latest(self.registry)


# --------------------------------------------------------------------------- the app


@dataclass(frozen=True)
class _Payload:
    """One request's input, checked for form only; the batch worker coerces it.

    Requests whose `key` is equal (same columns, same kinds of values, same strictness) are
    coerced together in one ``coerce`` call; a request with no key is coerced alone.
    """

    raw: Any
    rows: int
    strict: bool
    key: tuple | None = None


def _signature(values: Any) -> str:
    """The kinds of values in one column of a request: numpy dtype, or Python types."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.dtype.str
    prefix = "O:" if isinstance(values, np.ndarray) else ""
    # None is "missing" in every column and reads the same merged or alone.
    kinds = {type(value).__qualname__ for value in values if value is not None}
    return prefix + ",".join(sorted(kinds))


def _columnar(records: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Records as columns; a key a record lacks is None there (as pandas reads records)."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return {name: [record.get(name) for record in records] for name in names}


def _merge_columns(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Columnar requests (same key) as one columnar input, rows in request order."""
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    for name, first in parts[0].items():
        values = [part[name] for part in parts]
        if isinstance(first, np.ndarray):
            merged[name] = np.concatenate(values)
        else:
            merged[name] = [value for column in values for value in column]
    return merged


def _n_rows(result: Any) -> int:
    if isinstance(result, Mapping):
        return _n_rows(next(iter(result.values()))) if result else 0
    if isinstance(result, (list, tuple)):
        return _n_rows(result[0]) if result else 0
    return len(result)


class _State:
    """Everything one app instance holds: the served bundle, its batcher, its metrics."""

    def __init__(
        self,
        loaded: Any,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_rows: int,
        max_body_bytes: int,
        registry: CollectorRegistry | None,
    ):
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive; got {max_body_bytes}.")
        self.served = _Served.of(loaded)
        self.metrics = _Metrics(registry or CollectorRegistry(auto_describe=True))
        self.max_body_bytes = int(max_body_bytes)
        self.batcher = DynamicBatcher(
            self._process,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queue_rows=max_queue_rows,
            on_batch=self.metrics.batch,
        )
        self.ready = False
        self._warm_lock: asyncio.Lock | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ requests -> payloads
    def payload(self, raw: Any, *, strict: bool) -> _Payload:
        """Wrap one request's raw input (records, columns, tensors) for the batcher."""
        tabular = (self.served.schema_dict or {}).get("kind") == "tabular"
        columns = None
        if tabular and isinstance(raw, list) and raw and all(isinstance(r, Mapping) for r in raw):
            columns = _columnar(raw)
        elif tabular and isinstance(raw, Mapping) and raw:
            values = list(raw.values())
            if all(
                isinstance(v, list) or (isinstance(v, np.ndarray) and v.ndim == 1) for v in values
            ):
                columns = dict(raw)
        if columns is not None:
            lengths = {len(values) for values in columns.values()}
            if len(lengths) == 1:
                key = (
                    strict,
                    tuple(sorted((str(name), _signature(v)) for name, v in columns.items())),
                )
                return _Payload(columns, lengths.pop(), strict, key)
        return _Payload(raw, _rough_rows(raw), strict)

    # ------------------------------------------------------------------ worker thread
    def _predict(self, raw: Any, with_scores: bool, strict: bool = False) -> tuple[Any, Any]:
        """One model call: (predictions, scores or None)."""
        loaded = self.served.bundle
        if with_scores and self.served.has_postprocess:
            scores = loaded.predict(raw, postprocess=False, strict=strict)
            return loaded.decode(scores), scores
        predictions = loaded.predict(raw, strict=strict)
        return predictions, (predictions if with_scores else None)

    def _process(self, payloads: list[_Payload], with_scores: bool) -> list[Any]:
        """Answer one batch: each payload's ``(predictions, scores, rows)`` or its exception."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return self._answer(payloads, with_scores)
            finally:
                self._log_warnings(caught)

    def _answer(self, payloads: list[_Payload], with_scores: bool) -> list[Any]:
        keys = {payload.key for payload in payloads}
        failed_key = None
        if len(keys) == 1 and None not in keys:
            # The common case: one kind of request. Bundle.predict coerces the merged
            # input once; if that input is refused, find out below whose rows it was.
            merged = _merge_columns([payload.raw for payload in payloads])
            try:
                result = self._predict(merged, with_scores, payloads[0].strict)
            except SchemaError:
                failed_key = payloads[0].key
            except Exception as exc:
                if len(payloads) == 1:
                    return [exc]
                return [self._alone(p.raw, with_scores, strict=p.strict) for p in payloads]
            else:
                return self._split(result, [payload.rows for payload in payloads])
        outcomes: list[Any] = [None] * len(payloads)
        parts: list[tuple[list[int], Any, list[int]]] = []  # (payloads, canonical, rows each)
        groups: dict[Any, list[int]] = {}
        for index, payload in enumerate(payloads):
            key = payload.key if payload.key is not None else ("alone", index)
            groups.setdefault(key, []).append(index)
        for key, indexes in groups.items():
            if len(indexes) > 1 and key != failed_key:
                rows = [payloads[i].rows for i in indexes]
                try:
                    merged = _merge_columns([payloads[i].raw for i in indexes])
                    canonical, n_rows = self.served.coerce(
                        merged, strict=payloads[indexes[0]].strict
                    )
                except SchemaError:
                    pass  # someone's rows are bad: coerce them one by one
                else:
                    if n_rows == sum(rows):
                        parts.append((indexes, canonical, rows))
                        continue
            for i in indexes:
                try:
                    canonical, n_rows = self.served.coerce(
                        payloads[i].raw, strict=payloads[i].strict
                    )
                except Exception as exc:
                    outcomes[i] = exc
                else:
                    parts.append(([i], canonical, [n_rows]))
        if not parts:
            return outcomes
        try:
            result = self._predict(
                concat_rows([canonical for _, canonical, _ in parts]), with_scores
            )
        except Exception as exc:
            if len(payloads) == 1:
                return [exc]
            for indexes, canonical, rows in parts:
                start = 0
                for i, n_rows in zip(indexes, rows, strict=True):
                    piece = (
                        canonical
                        if len(indexes) == 1
                        else slice_rows(canonical, start, start + n_rows)
                    )
                    start += n_rows
                    outcomes[i] = self._alone(piece, with_scores, n_rows)
            return outcomes
        order = [i for indexes, _, _ in parts for i in indexes]
        rows = [n for _, _, counts in parts for n in counts]
        for i, outcome in zip(order, self._split(result, rows), strict=True):
            outcomes[i] = outcome
        return outcomes

    def _alone(
        self, raw: Any, with_scores: bool, rows: int | None = None, *, strict: bool = False
    ) -> Any:
        try:
            predictions, scores = self._predict(raw, with_scores, strict)
        except Exception as exc:
            return exc
        return predictions, scores, _n_rows(predictions) if rows is None else rows

    @staticmethod
    def _split(result: tuple[Any, Any], rows: list[int]) -> list[Any]:
        predictions, scores = result
        if _n_rows(predictions) != sum(rows):
            raise RuntimeError(
                f"the batch predicted {_n_rows(predictions)} rows for {sum(rows)} input rows"
            )
        outcomes, start = [], 0
        for n_rows in rows:
            stop = start + n_rows
            pieces = (slice_rows(predictions, start, stop), slice_rows(scores, start, stop))
            outcomes.append((*pieces, n_rows))
            start = stop
        return outcomes

    def _log_warnings(self, caught: list[warnings.WarningMessage]) -> None:
        """Log each distinct warning once (as JSON), not on stderr for every batch."""
        for warning in caught:
            text = f"{warning.category.__name__}: {warning.message}"
            if text in self._warned or len(self._warned) >= 1000:
                continue
            self._warned.add(text)
            logger.warning(
                str(warning.message),
                extra={"fields": {"category": warning.category.__name__}},
            )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the batcher and warm the whole path up once; then the server is ready."""
        if self.ready:
            return
        if self._warm_lock is None:
            self._warm_lock = asyncio.Lock()
        async with self._warm_lock:
            if self.ready:
                return
            self.batcher.start()
            raw = self.served.warm_up_input()
            if raw is not None:
                started = time.perf_counter()
                try:
                    predictions, scores, _ = await self.batcher.submit(
                        self.payload(raw, strict=False), 1, with_scores=True
                    )
                    self.served.learn_outputs(predictions, scores)
                    logger.info(
                        "warmed up",
                        extra={"fields": {"seconds": round(time.perf_counter() - started, 3)}},
                    )
                except Exception:
                    logger.warning(
                        "warm-up on a row made from the input contract failed; serving anyway "
                        "(the first request pays for tracing)",
                        exc_info=True,
                    )
            self.ready = True
            logger.info(
                "ready",
                extra={
                    "fields": {
                        "model": self.served.name,
                        "version": self.served.version,
                        "max_batch_size": self.batcher.max_batch_size,
                        "max_wait_ms": self.batcher.max_wait * 1000,
                    }
                },
            )

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()

    async def predict(self, raw: Any, *, strict: bool, with_scores: bool) -> tuple[Any, Any, int]:
        """Queue one request; its rows are coerced and predicted with the others of its batch."""
        if not self.ready:
            await self.start()
        payload = self.payload(raw, strict=strict)
        return await self.batcher.submit(payload, payload.rows, with_scores=with_scores)


def _rough_rows(raw: Any) -> int:
    """Rows of a raw input, for the batch limits (exact rows come from coerce)."""
    if isinstance(raw, Mapping):
        return max((_rough_rows(value) for value in raw.values()), default=1)
    return len(raw) if isinstance(raw, (list, tuple, np.ndarray)) else 1


def _endpoint(name: str) -> Callable[[Callable[..., Awaitable[Response]]], Any]:
    """Wrap a handler: label it for metrics, and turn exceptions into JSON error answers."""

    def wrap(handler: Callable[..., Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            request.scope.setdefault("state", {})["endpoint"] = name
            try:
                return await handler(request, request.app.state.bundle_server)
            except _RequestError as exc:
                return _error(request, exc.status, str(exc), exc.kind)
            except SchemaError as exc:
                return _error(request, 400, str(exc), "schema")
            except StepError as exc:
                return _error(request, 400, str(exc), "step")
            except Overloaded as exc:
                return _error(request, 503, str(exc), "overloaded")
            except Exception as exc:
                return _internal_error(request, exc)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _error(request: Request, status: int, message: str, kind: str) -> Response:
    request.scope.setdefault("state", {})["error_kind"] = kind
    return _json_response({"error": message}, status)


def _internal_error(request: Request, exc: BaseException) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    logger.error(
        "unhandled error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"fields": {"request_id": request_id, "path": request.url.path}},
    )
    request.scope.setdefault("state", {})["error_kind"] = "internal"
    message = (
        f"Internal server error ({type(exc).__name__}); request id {request_id}. "
        "The details are in the server log."
    )
    return _json_response({"error": message, "request_id": request_id}, 500)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, inflated if gzip/deflate encoded, refused past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _RequestError(413, _too_large(int(declared), limit), kind="too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _RequestError(413, _too_large(size, limit), kind="too_large")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "deflate"):
        try:
            inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            body = inflater.decompress(body, limit + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise _RequestError(
                400, f"The {encoding} request body is corrupt: {exc}.", kind="request"
            ) from exc
        if len(body) > limit:
            raise _RequestError(413, _too_large(len(body), limit), kind="too_large")
    elif encoding not in ("", "identity"):
        raise _RequestError(
            400, f"Unsupported Content-Encoding {encoding!r}; use gzip or deflate.", kind="request"
        )
    return body


def _too_large(size: int, limit: int) -> str:
    return (
        f"The request body has {size:,} bytes, over the server's limit of {limit:,}. "
        "Split the rows over several requests."
    )


def _check_model(server: _State, name: str, version: str | None) -> _Served:
    served = server.served
    if name != served.name:
        raise _RequestError(
            404, f"Unknown model {name!r}: this server serves {served.name!r}.", kind="not_found"
        )
    if version is not None and version != served.version:
        raise _RequestError(
            404,
            f"Unknown version {version!r} of model {name!r}: this server serves version "
            f"{served.version!r}.",
            kind="not_found",
        )
    return served


# ------------------------------------------------------------------ handlers


@_endpoint("live")
async def _live(request: Request, server: _State) -> Response:
    return _json_response({"live": True})


@_endpoint("ready")
async def _ready(request: Request, server: _State) -> Response:
    if not server.ready:
        await server.start()
    return _json_response({"ready": server.ready}, 200 if server.ready else 503)


@_endpoint("server_metadata")
async def _server_metadata(request: Request, server: _State) -> Response:
    return _json_response(
        {
            "name": "keras-bundle",
            "version": _bundle.__version__,
            "extensions": ["binary_tensor_data"],
        }
    )


@_endpoint("model_metadata")
async def _model_metadata(request: Request, server: _State) -> Response:
    params = request.path_params
    served = _check_model(server, params["name"], params.get("version"))
    if not server.ready:
        await server.start()
    return _json_response(served.metadata())


@_endpoint("model_ready")
async def _model_ready(request: Request, server: _State) -> Response:
    params = request.path_params
    _check_model(server, params["name"], params.get("version"))
    if not server.ready:
        await server.start()
    return _json_response(
        {"name": server.served.name, "ready": server.ready}, 200 if server.ready else 503
    )


@_endpoint("infer")
async def _infer(request: Request, server: _State) -> Response:
    params = request.path_params
    served = _check_model(server, params["name"], params.get("version"))
    body = await _body(request, server.max_body_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _RequestError(
                400,
                f"{HEADER_LENGTH} is {header_length!r}, but the body has {len(body):,} bytes.",
                kind="request",
            )
        split = int(header_length)
    else:
        split = len(body)
    view = memoryview(body)
    infer_request = _parse_json(view[:split])
    binary = view[split:]
    if not isinstance(infer_request, Mapping) or not isinstance(infer_request.get("inputs"), list):
        raise _RequestError(
            400, "An inference request is a JSON object with a list of 'inputs'.", kind="request"
        )
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for spec in infer_request["inputs"]:
        name, array, offset = _read_tensor(spec, binary, offset)
        if name in tensors:
            raise _RequestError(400, f"Input {name!r} appears twice.", kind="request")
        tensors[name] = array
    request_parameters = infer_request.get("parameters") or {}
    all_binary = bool(
        isinstance(request_parameters, Mapping) and request_parameters.get("binary_data_output")
    )
    wanted = _requested_outputs(infer_request.get("outputs"), served, all_binary)
    with_scores = any(name not in served.default_outputs for name in wanted)
    raw = served.raw_from_tensors(tensors)
    predictions, scores, rows = await server.predict(raw, strict=True, with_scores=with_scores)
    request.scope["state"]["rows"] = rows
    produced = _named(predictions, "predictions")
    if scores is not None and served.has_postprocess:
        produced.update(_named(scores, "scores"))
    outputs, chunks = [], []
    for name, binary_output in wanted.items():
        tensor, data = _output_tensor(name, produced[name], binary=binary_output)
        outputs.append(tensor)
        if data is not None:
            chunks.append(data)
    answer: dict[str, Any] = {
        "model_name": served.name,
        "model_version": served.version,
        "outputs": outputs,
    }
    if "id" in infer_request:
        answer["id"] = infer_request["id"]
    header = json.dumps(answer, default=_json_default, separators=(",", ":")).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _requested_outputs(requested: Any, served: _Served, all_binary: bool) -> dict[str, bool]:
    """Output name -> binary? (the defaults when the request names none)."""
    if requested is None:
        return {name: all_binary for name in served.default_outputs}
    if not isinstance(requested, list):
        raise _RequestError(400, "'outputs' must be a list of objects.", kind="request")
    wanted: dict[str, bool] = {}
    for item in requested:
        name = item.get("name") if isinstance(item, Mapping) else None
        if name not in served.outputs:
            raise _RequestError(
                400,
                f"Unknown output {name!r}; model {served.name!r} has outputs "
                f"{', '.join(map(repr, served.outputs))}.",
                kind="request",
            )
        parameters = item.get("parameters") or {}
        flag = (
            parameters.get("binary_data", all_binary)
            if isinstance(parameters, Mapping)
            else all_binary
        )
        wanted[name] = bool(flag)
    return wanted


_PREDICT_KEYS = ("records", "columns", "instances")


@_endpoint("predict")
async def _predict(request: Request, server: _State) -> Response:
    body = await _body(request, server.max_body_bytes)
    payload = _parse_json(body)
    keys = [key for key in _PREDICT_KEYS if isinstance(payload, Mapping) and key in payload]
    if len(keys) != 1:
        raise _RequestError(
            400,
            'The body must be a JSON object with exactly one of "records" (a list of row '
            'objects), "columns" (an object of column -> list of values) or "instances" (a '
            "list of samples, for array bundles); got "
            + (
                f"keys {sorted(payload)}."
                if isinstance(payload, Mapping)
                else type(payload).__name__ + "."
            ),
            kind="request",
        )
    key = keys[0]
    raw = payload[key]
    expected = dict if key == "columns" else list
    if not isinstance(raw, expected):
        raise _RequestError(
            400,
            f'"{key}" must be a JSON {"object" if expected is dict else "array"}; '
            f"got {type(raw).__name__}.",
            kind="request",
        )
    strict = payload.get("strict", False)
    if not isinstance(strict, bool):
        raise _RequestError(400, '"strict" must be true or false.', kind="request")
    if key == "records" and not all(isinstance(row, Mapping) for row in raw):
        raise _RequestError(
            400, '"records" must be a list of objects, one per row.', kind="request"
        )
    predictions, _, rows = await server.predict(raw, strict=strict, with_scores=False)
    request.scope["state"]["rows"] = rows
    return _json_response({"predictions": _jsonable(predictions)})


@_endpoint("metrics")
async def _metrics(request: Request, server: _State) -> Response:
    return Response(server.metrics.exposition(), media_type=prometheus_client.CONTENT_TYPE_LATEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None) or "error"
    kind = {404: "not_found", 405: "request"}.get(status, "request")
    request.scope.setdefault("state", {})["error_kind"] = kind
    if status == 404:
        detail = f"No endpoint at {request.url.path}; see GET /v2 and /v2/models/<name>."
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
    return _json_response({"error": detail}, status)


async def _unhandled(request: Request, exc: Exception) -> Response:
    return _internal_error(request, exc)


class _Observe:
    """Pure ASGI middleware: request id, access log (JSON), request metrics."""

    QUIET = frozenset({"live", "ready", "metrics"})

    def __init__(self, app: Any, state: _State):
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        info = scope.setdefault("state", {})
        info["request_id"] = request_id
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            endpoint = info.get("endpoint", "unmatched")
            metrics = self.state.metrics
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(elapsed)
            kind = info.get("error_kind")
            if kind is not None:
                metrics.errors.labels(kind).inc()
            level = logging.DEBUG if endpoint in self.QUIET and status < 400 else logging.INFO
            if access_logger.isEnabledFor(level):
                client = scope.get("client")
                fields = {
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "endpoint": endpoint,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                }
                if "rows" in info:
                    fields["rows"] = info["rows"]
                if kind is not None:
                    fields["error_kind"] = kind
                access_logger.log(level, "access", extra={"fields": fields})


def _request_id(scope: dict) -> str:
    for key, value in scope.get("headers", []):
        if key == REQUEST_ID.encode():
            text = value.decode("latin-1")[:64]
            if text and all(ch.isalnum() or ch in "-_.:" for ch in text):
                return text
            break
    return uuid.uuid4().hex


def create_app(
    bundle: Bundle,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_queue_rows: int = DEFAULT_MAX_QUEUE_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    registry: CollectorRegistry | None = None,
) -> Any:
    """An ASGI app (Starlette) serving a loaded bundle; embed it in any ASGI server.

    The app warms up (one prediction through the whole path) in its lifespan startup, or on
    its first request when the host does not run lifespan events; ``/v2/health/ready``
    answers 200 only after that.

    Args:
        bundle: a loaded `Bundle` (``Bundle.load(path)``).
        max_batch_size: rows per model call when concurrent requests are merged; a larger
            request runs alone (``Bundle.predict`` chunks it), never split across requests.
        max_wait_ms: how long an idle server holds a request for others to join its batch;
            while a batch runs, the next one fills up without waiting. 0 never waits.
        max_queue_rows: rows that may wait for the model; past it requests get 503.
        max_body_bytes: largest request body (after decompression); larger gets 413.
        registry: the prometheus_client registry for this app's metrics (default: its own).

    Returns:
        A Starlette application.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(Bundle.load("models/churn")), port=8080)
    """
    state = _State(
        bundle,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_rows=max_queue_rows,
        max_body_bytes=max_body_bytes,
        registry=registry,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2", _server_metadata, methods=["GET"]),
        Route("/v2/health/live", _live, methods=["GET"]),
        Route("/v2/health/ready", _ready, methods=["GET"]),
        Route(model, _model_metadata, methods=["GET"]),
        Route(version, _model_metadata, methods=["GET"]),
        Route(f"{model}/ready", _model_ready, methods=["GET"]),
        Route(f"{version}/ready", _model_ready, methods=["GET"]),
        Route(f"{model}/infer", _infer, methods=["POST"]),
        Route(f"{version}/infer", _infer, methods=["POST"]),
        Route("/predict", _predict, methods=["POST"]),
        Route("/metrics", _metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unhandled},
    )
    app.state.bundle_server = state
    app.add_middleware(_Observe, state=state)
    return app


# --------------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: JSON lines on stderr for uvicorn and the server."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "bundle.serve": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


# --------------------------------------------------------------------------- run


def run(
    location: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    trusted: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    log_level: str = "info",
    timeout_graceful_shutdown: float = DEFAULT_GRACEFUL_SHUTDOWN_S,
) -> None:
    """Serve the bundle at `location` until SIGINT/SIGTERM (what ``bundle serve`` runs).

    With one worker the bundle is loaded here, before the port opens, so a bundle that cannot
    be loaded raises at once. With ``workers > 1``, uvicorn starts that many processes on
    the same port, each loading the bundle once through an app factory; metrics switch to
    prometheus_client's multiprocess mode so ``/metrics`` sums over all workers.

    On SIGTERM the server stops accepting connections, finishes the requests in flight (at
    most `timeout_graceful_shutdown` seconds), then exits.

    Args:
        location: a bundle version directory, a root (its highest version), an archive or a
            URL: whatever ``Bundle.load`` accepts.
        host: the interface to listen on (``0.0.0.0`` for all).
        port: the TCP port.
        workers: server processes; each holds its own copy of the model.
        trusted: allow loading parts that execute code (see ``Bundle.load``).
        max_batch_size: rows per merged model call.
        max_wait_ms: how long an idle server waits for a request's batch to fill.
        log_level: ``debug``, ``info``, ``warning`` or ``error``; access logs are ``info``.
        timeout_graceful_shutdown: seconds to finish in-flight requests on shutdown.

    Raises:
        BundleError: the bundle cannot be loaded (not found, tampered, needs trusted=True),
            or the workers could not start.
        ValueError: an argument is out of range.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}.")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1 row; got {max_batch_size}.")
    if max_wait_ms < 0:
        raise ValueError(f"max_wait_ms must be 0 or more; got {max_wait_ms}.")
    location = os.fspath(location)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": log_config(log_level),
        "log_level": log_level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": timeout_graceful_shutdown,
        "server_header": False,
    }
    if workers == 1:
        loaded = Bundle.load(location, trusted=trusted)
        app = create_app(loaded, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
        uvicorn.run(app, **options)
        return
    work = Path(tempfile.mkdtemp(prefix="keras-bundle-serve-"))
    error_file = work / "worker-error.txt"
    config = {
        "location": location,
        "trusted": trusted,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "error_file": str(error_file),
    }
    own_metrics = not os.environ.get(MULTIPROC_ENV)
    if own_metrics:
        (work / "metrics").mkdir()
        os.environ[MULTIPROC_ENV] = str(work / "metrics")
    os.environ[CONFIG_ENV] = json.dumps(config)
    done = threading.Event()

    def stop_when_a_worker_cannot_load() -> None:
        # Recent uvicorn stops on the workers' startup-failure exit code by itself; older
        # releases restart them forever (or wait with none). SIGTERM ends the supervisor
        # either way: it stops the workers and returns.
        while not done.wait(0.2):
            if error_file.exists():
                if not done.is_set():
                    signal.raise_signal(signal.SIGTERM)
                return

    watcher = threading.Thread(target=stop_when_a_worker_cannot_load, daemon=True)
    watcher.start()
    try:
        uvicorn.run("bundle.serve:_worker_app", factory=True, workers=workers, **options)
        done.set()
        if error_file.exists():  # the workers stopped the server: they could not load
            raise BundleError(error_file.read_text(encoding="utf-8"))
    finally:
        done.set()
        os.environ.pop(CONFIG_ENV, None)
        if own_metrics:
            os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(work, ignore_errors=True)


def _worker_app() -> Any:
    """The app factory each uvicorn worker process calls: load the bundle once, serve it."""
    config = json.loads(os.environ[CONFIG_ENV])
    try:
        loaded = Bundle.load(config["location"], trusted=config["trusted"])
    except BundleError as exc:
        logger.error("cannot load the bundle: %s", exc)
        # The first worker to fail tells the parent why (the file exists for the others).
        with (
            contextlib.suppress(FileExistsError),
            open(config["error_file"], "x", encoding="utf-8") as handle,
        ):
            handle.write(str(exc))
        # uvicorn's supervisor restarts a worker that died, but stops on this exit code:
        # every restart would fail the same way.
        raise SystemExit(_STARTUP_FAILURE) from exc
    return create_app(
        loaded, max_batch_size=config["max_batch_size"], max_wait_ms=config["max_wait_ms"]
    )
