"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on its own port.

The same process, the same `Service` (bundle, dynamic batcher, metrics) as the REST app: a
gRPC request and a REST request that arrive together are merged into one model call. The
server runs on the REST server's event loop (``grpc.aio``), started and stopped by the
app's lifespan.

Inputs come as typed contents (``fp64_contents``, ``bytes_contents``...) or as
``raw_input_contents`` (one entry per input, the binary layout of the REST extension);
outputs are answered as ``raw_output_contents``, as Triton does (tritonclient reads them
with ``as_numpy``). Every output is returned unless the request names some. An error is the
call's status: the REST answer's message, with the code of its HTTP status
(`STATUS_CODES`); an unexpected failure is ``INTERNAL`` with a request id, its traceback in
the server log.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

import bundle as _bundle

from ._proto import open_inference_pb2 as pb
from .logs import access_logger, logger
from .protocol import (
    RequestError,
    datatype_of,
    decode_binary,
    decode_values,
    raw_bytes,
    tensor_count,
    texts,
)
from .service import Service, client_error

SERVICE_NAME = "inference.GRPCInferenceService"
DEFAULT_GRPC_PORT = 8081

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}
"""The gRPC status code of each HTTP status the REST app answers a refused request with."""

# The typed-contents field of each datatype (FP16 has none: it travels raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_CONTENTS = sorted(set(_CONTENTS_FIELD.values()))


# --------------------------------------------------------------------------- requests


def read_inputs(request: Any) -> dict[str, np.ndarray]:
    """The input tensors of a ``ModelInferRequest``, checked like the REST app's."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400,
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of 'inputs' (or typed contents for all).",
            kind="request",
        )
    tensors: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise RequestError(400, "An input tensor has no 'name'.", kind="request")
        if name in tensors:
            raise RequestError(400, f"Input {name!r} appears twice.", kind="request")
        shape = list(tensor.shape)
        count = tensor_count(name, tensor.datatype, shape)
        if raw:
            tensors[name] = decode_binary(name, tensor.datatype, shape, count, raw[index])
        else:
            tensors[name] = decode_values(
                name, tensor.datatype, shape, count, _contents(name, tensor)
            )
    return tensors


def _contents(name: str, tensor: Any) -> list[Any]:
    """A tensor's typed contents, from the field of its datatype (and no other)."""
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise RequestError(
            400,
            f"Input {name!r} is {tensor.datatype}, which has no typed contents: send its bytes "
            "in raw_input_contents.",
            kind="request",
        )
    contents = tensor.contents
    misplaced = [other for other in _ALL_CONTENTS if other != field and getattr(contents, other)]
    if misplaced:
        raise RequestError(
            400,
            f"Input {name!r} is {tensor.datatype}: its elements go in contents.{field}, but "
            f"the request fills contents.{misplaced[0]}.",
            kind="request",
        )
    values = list(getattr(contents, field))
    return texts(values) if tensor.datatype == "BYTES" else values


def requested_outputs(request: Any, service: Service) -> list[str]:
    """The output names a ``ModelInferRequest`` asks for (all of them when it names none)."""
    if not request.outputs:
        return list(service.served.outputs)
    names = [output.name for output in request.outputs]
    service.check_outputs(names)
    return list(dict.fromkeys(names))


def infer_response(request: Any, service: Service, produced: dict[str, Any]) -> Any:
    """A ``ModelInferResponse`` with each output's bytes in raw_output_contents."""
    served = service.served
    response = pb.ModelInferResponse(
        model_name=served.name, model_version=served.version, id=request.id
    )
    for name, value in produced.items():
        array = np.asarray(value)
        datatype = datatype_of(array.dtype)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(raw_bytes(array, datatype))
    return response


# --------------------------------------------------------------------------- the servicer


class InferenceServicer:
    """The six calls of the protocol's gRPC API, answered by one `Service`."""

    def __init__(self, service: Service):
        self.service = service

    async def server_live(self, request: Any, call: _Call) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, call: _Call) -> Any:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def model_ready(self, request: Any, call: _Call) -> Any:
        self.service.check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.service.ready)

    async def server_metadata(self, request: Any, call: _Call) -> Any:
        return pb.ServerMetadataResponse(
            name="keras-bundle", version=_bundle.__version__, extensions=["binary_tensor_data"]
        )

    async def model_metadata(self, request: Any, call: _Call) -> Any:
        self.service.check_model(request.name, request.version)
        metadata = self.service.served.metadata()
        response = pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
        )
        for tensor in metadata["inputs"]:
            response.inputs.add(**tensor)
        for tensor in metadata["outputs"]:
            response.outputs.add(**tensor)
        return response

    async def model_infer(self, request: Any, call: _Call) -> Any:
        service = self.service
        with service.arrival() as arrival:  # the batcher may wait for it meanwhile
            service.check_model(request.model_name, request.model_version)
            tensors = read_inputs(request)
            outputs = requested_outputs(request, service)
            produced, rows = await service.infer(tensors, outputs, arrival)
        call.rows = rows
        return infer_response(request, service, produced)

    def handlers(self) -> Any:
        """A grpc generic handler for the service's six methods."""
        methods = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, "live"),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, "ready"),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, "model_ready"),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, "server_metadata"),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, "model_metadata"),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, "infer"),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                method: grpc.unary_unary_rpc_method_handler(
                    _observed(self.service, behaviour, f"grpc_{endpoint}", method),
                    request_deserializer=request_type.FromString,
                    response_serializer=_serialize,
                )
                for method, (behaviour, request_type, endpoint) in methods.items()
            },
        )


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


class _Call:
    """What one call leaves for its access log line: rows predicted."""

    rows: int | None = None


def _observed(
    service: Service,
    behaviour: Callable[[Any, Any], Awaitable[Any]],
    endpoint: str,
    method: str,
) -> Callable[[Any, Any], Awaitable[Any]]:
    """Wrap a call: errors as status codes, request metrics, one JSON access log line."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        request_id = _request_id(context)
        info = _Call()
        status, kind = 200, None
        try:
            return await behaviour(request, info)
        except Exception as exc:
            refused = client_error(exc)
            if refused is None:
                status, kind = 500, "internal"
                logger.error(
                    "unhandled error",
                    exc_info=(type(exc), exc, exc.__traceback__),
                    extra={"fields": {"request_id": request_id, "method": method}},
                )
                message = (
                    f"Internal server error ({type(exc).__name__}); request id {request_id}. "
                    "The details are in the server log."
                )
                code = grpc.StatusCode.INTERNAL
            else:
                (status, kind), message = refused, str(exc)
                code = STATUS_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(code, message)
        finally:
            elapsed = time.perf_counter() - started
            metrics = service.metrics
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(elapsed)
            if kind is not None:
                metrics.errors.labels(kind).inc()
            quiet = endpoint in ("grpc_live", "grpc_ready") and status < 400
            level = logging.DEBUG if quiet else logging.INFO
            if access_logger.isEnabledFor(level):
                fields = {
                    "request_id": request_id,
                    "method": f"grpc:{method}",
                    "path": f"/{SERVICE_NAME}/{method}",
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "endpoint": endpoint,
                    "client": context.peer(),
                }
                if info.rows is not None:
                    fields["rows"] = info.rows
                if kind is not None:
                    fields["error_kind"] = kind
                access_logger.log(level, "access", extra={"fields": fields})

    return call


def _request_id(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            text = str(value)[:64]
            if text and all(ch.isalnum() or ch in "-_.:" for ch in text):
                return text
            break
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- the server


async def start_grpc_server(
    service: Service, host: str, port: int, *, reuse_port: bool = False
) -> tuple[Any, int]:
    """Start ``inference.GRPCInferenceService`` on ``host:port`` in the running event loop.

    Args:
        service: the served bundle and its batcher, shared with the REST app.
        host: the interface to listen on.
        port: the TCP port (0: any free port; the bound one is returned).
        reuse_port: share the port with other processes (``run(workers=N)``); otherwise a
            port already in use is an error.

    Returns:
        ``(server, port)``: the started ``grpc.aio`` server and the port it listens on.

    Raises:
        OSError: the address cannot be bound.
    """
    limit = service.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # A message over the REST body limit is refused by gRPC itself
            # (RESOURCE_EXHAUSTED), before it is parsed.
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ],
    )
    server.add_generic_rpc_handlers((InferenceServicer(service).handlers(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
        bound = 0
        cause: BaseException | None = exc
    else:
        cause = None
    if not bound:
        raise OSError(
            f"Cannot listen for gRPC on {address}: the port is in use or the address is not "
            "this machine's. Choose another with --grpc-port (or --no-grpc)."
        ) from cause
    await server.start()
    logger.info("gRPC listening", extra={"fields": {"address": f"{host}:{bound}"}})
    return server, bound
