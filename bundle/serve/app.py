"""The HTTP edge: a Starlette app with the protocol's REST endpoints, /predict and /metrics."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import prometheus_client
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

import bundle as _bundle
from bundle import Bundle

from .drift import DEFAULT_DRIFT_WINDOW_S
from .logs import access_logger, logger
from .protocol import (
    HEADER_LENGTH,
    RequestError,
    json_default,
    jsonable,
    output_tensor,
    parse_json,
    read_tensor,
)
from .served import named_results
from .service import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE_ROWS,
    DEFAULT_MAX_WAIT_MS,
    Arrival,
    Service,
    client_error,
)

REQUEST_ID = "x-request-id"
GRPC_GRACE_S = 10.0  # on shutdown, how long gRPC calls in flight may take to finish


def _json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None):
    content = json.dumps(body, default=json_default, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _endpoint(name: str) -> Callable[[Callable[..., Awaitable[Response]]], Any]:
    """Wrap a handler: label it for metrics, and turn exceptions into JSON error answers."""

    def wrap(handler: Callable[..., Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            request.scope.setdefault("state", {})["endpoint"] = name
            try:
                return await handler(request, request.app.state.bundle_server)
            except ClientDisconnect:
                # The client went away mid-request (or was too slow): no one reads this.
                return _error(request, 499, "The client disconnected.", "disconnected")
            except Exception as exc:
                refused = client_error(exc)
                if refused is None:
                    return _internal_error(request, exc)
                return _error(request, refused[0], str(exc), refused[1])

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
        raise RequestError(413, _too_large(int(declared), limit), kind="too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, _too_large(size, limit), kind="too_large")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "deflate"):
        try:
            inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            body = inflater.decompress(body, limit + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise RequestError(
                400, f"The {encoding} request body is corrupt: {exc}.", kind="request"
            ) from exc
        if len(body) > limit:
            raise RequestError(413, _too_large(len(body), limit), kind="too_large")
    elif encoding not in ("", "identity"):
        raise RequestError(
            400, f"Unsupported Content-Encoding {encoding!r}; use gzip or deflate.", kind="request"
        )
    return body


def _too_large(size: int, limit: int) -> str:
    return (
        f"The request body has {size:,} bytes, over the server's limit of {limit:,}. "
        "Split the rows over several requests."
    )


# ------------------------------------------------------------------ handlers


@_endpoint("live")
async def _live(request: Request, server: Service) -> Response:
    return _json_response({"live": True})


@_endpoint("ready")
async def _ready(request: Request, server: Service) -> Response:
    if not server.ready:
        await server.start()
    return _json_response({"ready": server.ready}, 200 if server.ready else 503)


@_endpoint("server_metadata")
async def _server_metadata(request: Request, server: Service) -> Response:
    return _json_response(
        {
            "name": "keras-bundle",
            "version": _bundle.__version__,
            "extensions": ["binary_tensor_data"],
        }
    )


@_endpoint("model_metadata")
async def _model_metadata(request: Request, server: Service) -> Response:
    params = request.path_params
    served = server.check_model(params["name"], params.get("version"))
    if not server.ready:
        await server.start()
    return _json_response(served.metadata())


@_endpoint("model_ready")
async def _model_ready(request: Request, server: Service) -> Response:
    params = request.path_params
    server.check_model(params["name"], params.get("version"))
    if not server.ready:
        await server.start()
    return _json_response(
        {"name": server.served.name, "ready": server.ready}, 200 if server.ready else 503
    )


@_endpoint("infer")
async def _infer(request: Request, server: Service) -> Response:
    with server.arrival() as arrival:  # the batcher may wait for it meanwhile
        return await _infer_request(request, server, arrival)


async def _infer_request(request: Request, server: Service, arrival: Arrival) -> Response:
    params = request.path_params
    served = server.check_model(params["name"], params.get("version"))
    body = await _body(request, server.max_body_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise RequestError(
                400,
                f"{HEADER_LENGTH} is {header_length!r}, but the body has {len(body):,} bytes.",
                kind="request",
            )
        split = int(header_length)
    else:
        split = len(body)
    view = memoryview(body)
    infer_request = parse_json(view[:split])
    binary = view[split:]
    if not isinstance(infer_request, Mapping) or not isinstance(infer_request.get("inputs"), list):
        raise RequestError(
            400, "An inference request is a JSON object with a list of 'inputs'.", kind="request"
        )
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for spec in infer_request["inputs"]:
        name, array, offset = read_tensor(spec, binary, offset)
        if name in tensors:
            raise RequestError(400, f"Input {name!r} appears twice.", kind="request")
        tensors[name] = array
    request_parameters = infer_request.get("parameters") or {}
    all_binary = bool(
        isinstance(request_parameters, Mapping) and request_parameters.get("binary_data_output")
    )
    wanted = _requested_outputs(infer_request.get("outputs"), server, all_binary)
    produced, rows = await server.infer(tensors, list(wanted), arrival)
    request.scope["state"]["rows"] = rows
    outputs, chunks = [], []
    for name, binary_output in wanted.items():
        tensor, data = output_tensor(name, produced[name], binary=binary_output)
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
    header = json.dumps(answer, default=json_default, separators=(",", ":")).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _requested_outputs(requested: Any, server: Service, all_binary: bool) -> dict[str, bool]:
    """Output name -> binary? (every output when the request names none)."""
    if requested is None:  # the protocol: every output the model has
        return dict.fromkeys(server.served.outputs, all_binary)
    if not isinstance(requested, list):
        raise RequestError(400, "'outputs' must be a list of objects.", kind="request")
    names = [item.get("name") if isinstance(item, Mapping) else None for item in requested]
    server.check_outputs(names)
    wanted: dict[str, bool] = {}
    for name, item in zip(names, requested, strict=True):
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
async def _predict(request: Request, server: Service) -> Response:
    with server.arrival() as arrival:  # the batcher may wait for it meanwhile
        return await _predict_request(request, server, arrival)


async def _predict_request(request: Request, server: Service, arrival: Arrival) -> Response:
    body = await _body(request, server.max_body_bytes)
    payload = parse_json(body)
    keys = [key for key in _PREDICT_KEYS if isinstance(payload, Mapping) and key in payload]
    if len(keys) != 1:
        raise RequestError(
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
        raise RequestError(
            400,
            f'"{key}" must be a JSON {"object" if expected is dict else "array"}; '
            f"got {type(raw).__name__}.",
            kind="request",
        )
    strict = payload.get("strict", False)
    if not isinstance(strict, bool):
        raise RequestError(400, '"strict" must be true or false.', kind="request")
    if key == "records" and not all(isinstance(row, Mapping) for row in raw):
        raise RequestError(400, '"records" must be a list of objects, one per row.', kind="request")
    if key == "instances":
        raw = server.served.raw_from_instances(raw)
    predictions, _, rows = await server.predict(
        raw, strict=strict, with_scores=False, arrival=arrival
    )
    request.scope["state"]["rows"] = rows
    if isinstance(predictions, (list, tuple)):  # several model outputs: by output name
        predictions = named_results(predictions, "predictions", server.served.output_names)
    return _json_response({"predictions": jsonable(predictions)})


@_endpoint("metrics")
async def _metrics(request: Request, server: Service) -> Response:
    return Response(server.metrics.exposition(), media_type=prometheus_client.CONTENT_TYPE_LATEST)


@_endpoint("drift")
async def _drift(request: Request, server: Service) -> Response:
    if server.drift is None:
        reason = (
            "it was started with live drift off (drift_window=None)"
            if getattr(server.served.bundle, "profile", None) is not None
            else "the bundle has no training profile (save it again with an input example)"
        )
        raise RequestError(404, f"No live drift: {reason}.", kind="not_found")
    return _json_response(server.drift.to_dict())


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None) or "error"
    headers = dict(getattr(exc, "headers", None) or {})
    kind = {404: "not_found", 405: "request"}.get(status, "request")
    request.scope.setdefault("state", {})["error_kind"] = kind
    if status == 404:
        detail = f"No endpoint at {request.url.path}; see GET /v2 and /v2/models/<name>."
    elif status == 405:
        # RFC 9110: a 405 says which methods are allowed (Starlette keeps them in a set).
        allowed = ", ".join(sorted(m.strip() for m in headers.get("Allow", "").split(",")))
        headers["Allow"] = allowed
        detail = f"{request.method} is not allowed on {request.url.path}; use {allowed}."
    return _json_response({"error": detail}, status, headers)


async def _unhandled(request: Request, exc: Exception) -> Response:
    return _internal_error(request, exc)


class _Observe:
    """Pure ASGI middleware: request id, access log (JSON), request metrics."""

    QUIET = frozenset({"live", "ready", "metrics"})

    def __init__(self, app: Any, state: Service):
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
    drift_window: float | None = DEFAULT_DRIFT_WINDOW_S,
    grpc_port: int | None = None,
    grpc_host: str = "127.0.0.1",
    grpc_reuse_port: bool = False,
    settle_process: bool = False,
) -> Any:
    """An ASGI app (Starlette) serving a loaded bundle; embed it in any ASGI server.

    The app warms up (one prediction through the whole path) in its lifespan startup, or on
    its first request when the host does not run lifespan events; ``/v2/health/ready``
    answers 200 only after that. With `grpc_port`, the lifespan startup also starts the
    protocol's gRPC service on that port (after the warm-up), sharing the app's batcher,
    and its shutdown stops it; ``app.state.grpc_port`` is the port it listens on.

    Args:
        bundle: a loaded `Bundle` (``Bundle.load(path)``).
        max_batch_size: rows per model call when concurrent requests are merged; a larger
            request runs alone (``Bundle.predict`` chunks it), never split across requests.
        max_wait_ms: how long an idle server holds a request for others to join its batch;
            while a batch runs, the next one fills up without waiting. 0 never waits.
        max_queue_rows: rows that may wait for the model; past it requests get 503.
        max_body_bytes: largest request body (after decompression); larger gets 413.
        registry: the prometheus_client registry for this app's metrics (default: its own).
        drift_window: seconds of traffic the live drift metrics cover (``/metrics`` gauges
            ``bundle_drift_*``, ``GET /drift``), when the bundle has a training profile;
            None or 0 turns live drift off.
        grpc_port: serve ``inference.GRPCInferenceService`` on this port too (0: any free
            port); None serves REST only. Needs a host that runs lifespan events.
        grpc_host: the interface the gRPC service listens on.
        grpc_reuse_port: share the gRPC port with other processes serving the same bundle
            (``run(workers=N)`` does); otherwise a port in use fails the startup.
        settle_process: after the warm-up, freeze the process's objects out of the garbage
            collector and tune it for serving (`bundle.serve.tuning.settle`: a steady p99).
            Process-wide, so off unless asked; `run` asks.

    Returns:
        A Starlette application.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(Bundle.load("models/churn")), port=8080)
    """
    state = Service(
        bundle,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_rows=max_queue_rows,
        max_body_bytes=max_body_bytes,
        registry=registry,
        drift_window=drift_window,
        settle_process=settle_process,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await state.start()
        grpc_server = None
        try:
            if grpc_port is not None:
                from .grpc import start_grpc_server

                grpc_server, app.state.grpc_port = await start_grpc_server(
                    state, grpc_host, grpc_port, reuse_port=grpc_reuse_port
                )
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(GRPC_GRACE_S)
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
        Route("/drift", _drift, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unhandled},
    )
    app.state.bundle_server = state
    app.state.grpc_port = None
    app.add_middleware(_Observe, state=state)
    return app
