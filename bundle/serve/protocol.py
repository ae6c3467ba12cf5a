"""The Open Inference Protocol's tensors: datatypes, and tensors read from and written to requests.

Transport-neutral: the REST app and the gRPC service both read input tensors with
`read_tensor` and answer with `output_tensor`, and refuse a request with `RequestError`.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from bundle import SchemaError

HEADER_LENGTH = "inference-header-content-length"

# Open Inference Protocol datatypes <-> numpy.
DATATYPES: dict[str, np.dtype] = {
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
_NUMPY_TO_DATATYPE = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


class RequestError(Exception):
    """A request the server refuses: answered with `status` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, kind: str):
        super().__init__(message)
        self.status = status
        self.kind = kind


def datatype_of(dtype: Any) -> str:
    """The protocol datatype of a numpy dtype (text and objects are BYTES)."""
    dtype = np.dtype(dtype)
    return _NUMPY_TO_DATATYPE.get(
        dtype.newbyteorder("=") if dtype.byteorder == ">" else dtype, "BYTES"
    )


def parse_json(data: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(
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
        raise RequestError(
            400, f"Input {name!r}: its BYTES binary data is malformed ({exc}).", kind="request"
        ) from exc
    if offset != len(buffer):
        raise RequestError(
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


def read_tensor(spec: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input tensor of an infer request: (name, array shaped as declared, new offset)."""
    if not isinstance(spec, Mapping):
        raise RequestError(400, "Each entry of 'inputs' must be a JSON object.", kind="request")
    name = spec.get("name")
    shape = spec.get("shape")
    datatype = spec.get("datatype")
    if not isinstance(name, str):
        raise RequestError(400, "An input tensor has no 'name'.", kind="request")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise RequestError(
            400,
            f"Input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}.",
            kind="request",
        )
    if datatype not in DATATYPES:
        raise RequestError(
            400,
            f"Input {name!r}: unknown datatype {datatype!r}; the protocol's datatypes are "
            f"{', '.join(DATATYPES)}.",
            kind="request",
        )
    count = math.prod(shape)
    parameters = spec.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, Mapping) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise RequestError(
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
            dtype = DATATYPES[datatype].newbyteorder("<")
            if size != count * dtype.itemsize:
                raise RequestError(
                    400,
                    f"Input {name!r}: {size:,} bytes of binary data, but shape {shape} of "
                    f"{datatype} needs {count * dtype.itemsize:,}.",
                    kind="request",
                )
            array = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))
        return name, array.reshape(shape), offset
    if "data" not in spec:
        raise RequestError(
            400, f"Input {name!r} has neither 'data' nor binary data.", kind="request"
        )
    array = _json_tensor(name, spec["data"], datatype, count)
    return name, array.reshape(shape), offset


def _json_tensor(name: str, data: Any, datatype: str, count: int) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != count:
        raise RequestError(
            400,
            f"Input {name!r}: its shape holds {count:,} element(s), but 'data' has {len(flat):,}.",
            kind="request",
        )
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array
    dtype = DATATYPES[datatype]
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


def output_tensor(name: str, value: Any, *, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    array = np.asarray(value)
    datatype = datatype_of(array.dtype)
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


def jsonable(value: Any) -> Any:
    """Predictions as JSON: arrays as (nested) lists, dicts of arrays as dicts."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "to_dict"):  # a DataFrame of predictions
        return value.to_dict(orient="records")
    array = np.asarray(value)
    if array.dtype.kind in "SO":
        return (
            [jsonable(item) for item in array]
            if array.ndim > 1
            else [item.decode() if isinstance(item, bytes) else item for item in array.tolist()]
        )
    return array.tolist()


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
