"""The Open Inference Protocol's tensors: datatypes, and tensors read from and written to requests.

Transport-neutral: the REST app and the gRPC service both read input tensors with
`read_tensor` and answer with `output_tensor`, and refuse a request with `RequestError`.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import sys
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


MAX_DIMS = 32
"""Dimensions of one tensor at most (numpy allows 64; no model here takes more than a few)."""


def parse_json(data: bytes | memoryview) -> Any:
    """A request body's JSON, or a `RequestError` (400) naming what is wrong with it."""
    try:
        return json.loads(bytes(data))
    except RecursionError as exc:
        # json's C parser recurses once per level and stops at the interpreter's limit.
        raise RequestError(
            400,
            "The request body's JSON is nested too deeply to parse (about "
            f"{sys.getrecursionlimit():,} levels of arrays and objects or more). A tensor "
            f"needs one level per dimension, at most {MAX_DIMS}.",
            kind="request",
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(
            400, f"The request body is not valid JSON: {exc}.", kind="request"
        ) from exc


def tensor_count(name: str, datatype: Any, shape: Any) -> int:
    """Check one input tensor's datatype and shape; return its number of elements.

    Sizes come from the request, so nothing is allocated from them here: the callers
    compare the count with the data actually sent before they allocate.
    """
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_DIMS
        and all(type(d) is int and d >= 0 for d in shape)  # JSON true is no dimension
    ):
        raise RequestError(
            400,
            f"Input {name!r}: 'shape' must be a list of at most {MAX_DIMS} non-negative "
            f"integers, got {_brief(shape)}.",
            kind="request",
        )
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(
            400,
            f"Input {name!r}: unknown datatype {_brief(datatype)}; the protocol's datatypes are "
            f"{', '.join(DATATYPES)}.",
            kind="request",
        )
    return math.prod(shape)


def _brief(value: Any, limit: int = 80) -> str:
    """A client's value for an error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_binary(
    name: str, datatype: str, shape: list[int], count: int, chunk: bytes | memoryview
) -> np.ndarray:
    """A tensor from its raw bytes (binary extension, gRPC raw contents), shaped as declared."""
    if datatype == "BYTES":
        # Every element takes at least its 4-byte length: refuse a shape that claims more
        # elements than the bytes can hold before allocating anything for them.
        if count > len(chunk) // 4:
            raise RequestError(
                400,
                f"Input {name!r}: shape {_brief(shape)} claims {count:,} BYTES element(s), but "
                f"its {len(chunk):,} bytes of data hold at most {len(chunk) // 4:,} (each "
                "element is a 4-byte length and its bytes).",
                kind="request",
            )
        array = _decode_bytes_tensor(chunk, count, name)
    else:
        dtype = DATATYPES[datatype].newbyteorder("<")
        if len(chunk) != count * dtype.itemsize:
            raise RequestError(
                400,
                f"Input {name!r}: {len(chunk):,} bytes of data, but shape {_brief(shape)} of "
                f"{datatype} needs {count * dtype.itemsize:,}.",
                kind="request",
            )
        array = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))
    return array.reshape(shape)


def _decode_bytes_tensor(buffer: bytes | memoryview, count: int, name: str) -> np.ndarray:
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
            f"Input {name!r}: its BYTES binary data holds more than the {count:,} element(s) "
            "its shape says.",
            kind="request",
        )
    return out


def texts(values: list[bytes]) -> list[Any]:
    """BYTES elements as text where they are UTF-8 (as JSON clients send strings)."""
    return [_text(value) for value in values]


def _text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    """BYTES elements as binary data: a 4-byte little-endian length, then the bytes, each."""
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def read_tensor(spec: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input tensor of a REST infer request: (name, array shaped as declared, new offset)."""
    if not isinstance(spec, Mapping):
        raise RequestError(400, "Each entry of 'inputs' must be a JSON object.", kind="request")
    name = spec.get("name")
    if not isinstance(name, str):
        raise RequestError(400, "An input tensor has no 'name'.", kind="request")
    shape = spec.get("shape")
    datatype = spec.get("datatype")
    count = tensor_count(name, datatype, shape)
    parameters = spec.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, Mapping) else None
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise RequestError(
                400,
                f"Input {name!r}: binary_data_size {_brief(size)} does not fit the "
                f"{len(binary) - offset:,} bytes of binary data left in the request.",
                kind="request",
            )
        array = decode_binary(name, datatype, shape, count, binary[offset : offset + size])
        return name, array, offset + size
    if "data" not in spec:
        raise RequestError(
            400, f"Input {name!r} has neither 'data' nor binary data.", kind="request"
        )
    return name, decode_values(name, datatype, shape, count, spec["data"]), offset


def decode_values(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    """A tensor from its elements (JSON ``data``, gRPC typed contents), shaped as declared."""
    flat = _flatten(data, name)
    if len(flat) != count:
        raise RequestError(
            400,
            f"Input {name!r}: its shape holds {count:,} element(s), but its data has "
            f"{len(flat):,}.",
            kind="request",
        )
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    dtype = DATATYPES[datatype]
    try:
        if dtype.kind == "f":  # null stands for a missing value (NaN)
            flat = [math.nan if value is None else value for value in flat]
        if dtype.kind in "iub" and any(isinstance(v, float) for v in flat):
            raise TypeError("it holds fractional numbers")
        if dtype.kind == "b" and not all(isinstance(v, bool) for v in flat):
            raise TypeError("BOOL data must be true or false")
        return np.array(flat, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SchemaError(
            f"Input {name!r}: its data cannot be read as {datatype} ({str(exc).splitlines()[0]}).",
            column=name,
        ) from exc


def _flatten(data: Any, name: str) -> list[Any]:
    """Elements of a (nested) JSON array in row-major order; at most `MAX_DIMS` levels."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= MAX_DIMS:
                    raise RequestError(
                        400,
                        f"Input {name!r}: its data is nested deeper than {MAX_DIMS} levels; "
                        "a tensor's data is flat or nested once per dimension.",
                        kind="request",
                    )
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def output_tensor(name: str, value: Any, *, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """One REST output tensor: its JSON header, and its bytes when sent as binary data."""
    array = np.asarray(value)
    datatype = datatype_of(array.dtype)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        data = raw_bytes(array, datatype)
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


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's elements as raw bytes (binary extension, gRPC raw contents)."""
    if datatype == "BYTES":
        return encode_bytes_tensor(array)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


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
