"""Serve a bundle: the Open Inference Protocol (V2) over HTTP and gRPC, plain JSON, metrics.

A thin edge over ``Bundle.load`` + ``Bundle.predict``: every request is validated and
coerced on its own by the bundle's input contract (so one bad request gets its own 400),
concurrent requests are merged into one model call by a dynamic batcher
(`bundle.serve.batching`), and each request gets exactly its own rows back.

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
    GET  /drift                                    live drift over the last window (JSON)

    gRPC (its own port, 8081 by default): inference.GRPCInferenceService with ServerLive,
    ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer.

Tabular bundles take one input tensor per column (``BYTES`` for strings, ``FP32``/``FP64``/
``INT64``/``BOOL``... for numbers, shape ``[n]`` or ``[n, 1]``); array bundles take one
tensor named ``input`` with the batch axis first. The output ``predictions`` holds the
postprocessed predictions; ``scores`` (the model's raw outputs) is returned when the request
names it in ``outputs``. The binary tensor data extension is supported both ways.

Errors answer ``{"error": "..."}``: 400 for input problems (`SchemaError`, `StepError`, a
malformed request), 404 for an unknown model, version or path, 405 (with ``Allow``) for a
wrong method, 408 for headers slower than the header timeout, 413 for a body over the limit,
503 while overloaded or past the connection limit, and 500 with a request id only for a
failure of the server itself (the traceback goes to the server log). Over gRPC the same
messages come as status codes: INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE,
INTERNAL.

Metrics: with one worker, each process keeps its own metrics. With ``workers > 1``, `run`
turns on prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a temporary
directory unless already set), so any worker's ``/metrics`` reports the sum over all workers.

Live drift (`drift`): when the bundle carries a training profile, the server counts what it
scores over a sliding window (10 minutes by default, ``drift_window``) and reports it as
``bundle_drift_*`` gauges per feature and at ``GET /drift``.

Modules: `batching` (the dynamic batcher), `protocol` (the protocol's tensors), `served`
(the bundle's tensors), `metrics`, `drift` (live drift), `service` (a bundle behind its
batcher), `app` (the Starlette app), `grpc` (the gRPC service; messages in `_proto`),
`connections` (timeouts and the connection limit), `logs` (JSON logs), `runner` (`run`
and its workers).

Example:
    >>> from bundle.serve import create_app, run
    >>> app = create_app(Bundle.load("models/churn"))       # an ASGI app, to embed
    >>> run("models/churn", port=8080, workers=2)           # what `bundle serve` calls
"""

from __future__ import annotations

try:
    import grpc  # noqa: F401
    import httptools  # noqa: F401  (uvicorn[standard]: the guarded HTTP protocol)
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"bundle.serve needs the 'serve' extra ({_exc.name} is not installed).\n"
        "Install it with: pip install 'keras-bundle[serve]'"
    ) from _exc

from .app import create_app
from .connections import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    http_protocol,
)
from .drift import DEFAULT_DRIFT_WINDOW_S
from .grpc import DEFAULT_GRPC_PORT
from .logs import JsonFormatter, log_config
from .runner import run
from .service import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE_ROWS,
    DEFAULT_MAX_WAIT_MS,
)

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_DRIFT_WINDOW_S",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_QUEUE_ROWS",
    "DEFAULT_MAX_WAIT_MS",
    "JsonFormatter",
    "create_app",
    "http_protocol",
    "log_config",
    "run",
]
