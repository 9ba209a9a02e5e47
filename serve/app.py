"""The Litestar app: many task prompts served from ONE frozen T5, tasks mixed in each batch.

``create_app(settings)`` builds the app; its lifespan loads tokenizer and backbone once and
starts the batcher (see :mod:`spp.serve.service`). Endpoints:

    POST /predict?task=REF   REF = rte | rte@3 | rte@prod; body {"inputs": [...]} or {"texts": [...]}
    GET  /tasks              what can be served: names, versions, aliases, metrics, fields, labels
    GET  /health             liveness;  GET /ready: model loaded, batcher up, registry reachable
    GET  /metrics            Prometheus text;  GET /schema: OpenAPI (/schema/openapi.json)

Errors always answer a JSON :class:`~spp.serve.schemas.ErrorBody`, never a 500 for bad input:
404 unknown task (with the known names), 409 prompt unusable by this server (corrupt blob,
other backbone, no task spec: only that prompt's requests fail), 413 too many / too long
inputs or body, 422 malformed JSON, wrong types, bad reference or missing template field,
503 queue full or not running (with Retry-After).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from spp.prompts.errors import SppError
from spp.prompts.tasks import TaskInputError
from spp.serve.errors import (
    InvalidRequestError,
    PromptUnavailableError,
    QueueFullError,
    RequestTooLargeError,
    ScoringError,
    ServerBusyError,
)
from spp.serve.metrics import CONTENT_TYPE
from spp.serve.schemas import (
    ErrorBody,
    FieldError,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    TasksResponse,
)
from spp.serve.service import Service, UnknownTaskError
from spp.serve.settings import ServeSettings

log = logging.getLogger(__name__)

PREDICT_PATH = "/predict"
_ERRORS = {
    404: ResponseSpec(ErrorBody, description="Unknown task; `known` lists the served names."),
    409: ResponseSpec(ErrorBody, description="The prompt cannot be served here (corrupt, other backbone)."),
    413: ResponseSpec(ErrorBody, description="Too many inputs, an input too long, or the body too large."),
    422: ResponseSpec(ErrorBody, description="Malformed JSON, wrong types, bad reference, missing field."),
    503: ResponseSpec(ErrorBody, description="Queue full or server not running; see Retry-After."),
}


def _service(request: Request) -> Service:
    return request.app.state.spp


@post(PREDICT_PATH, status_code=200, responses=_ERRORS, summary="Classify inputs with a task's prompt")
async def predict(request: Request, data: PredictRequest, task: str) -> PredictResponse:
    """Score every input under the prompt ``task`` resolves to now (alias moves apply at once)."""
    context: dict[str, Any] = request.scope.setdefault("state", {}).setdefault("spp", {})
    return await _service(request).predict(task, data, context)


@get("/tasks", summary="Prompts that can be served")
async def tasks(request: Request) -> TasksResponse:
    return await _service(request).tasks()


@get("/health", summary="Liveness")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@get("/ready", summary="Readiness: model loaded, batcher running, registry reachable",
     responses={503: ResponseSpec(ReadyResponse, description="Not ready; `detail` says why.")})
async def ready(request: Request) -> Response[ReadyResponse]:
    service = _service(request)
    if not service.loaded:
        return Response(ReadyResponse(status="not_ready", detail="model or batcher not running"), status_code=503)
    try:
        await service.registry_call(service.registry.names)  # type: ignore[union-attr]
    except Exception as exc:  # any failure means "not reachable"; the reason goes in detail
        return Response(ReadyResponse(status="not_ready", detail=f"registry unreachable: {exc}"), status_code=503)
    assert service.backbone is not None and service.cache is not None
    body = ReadyResponse(status="ready", backbone=service.backbone.name, device=str(service.backbone.device),
                         prompts_cached=len(service.cache))
    return Response(body, status_code=200)


@get("/metrics", media_type=CONTENT_TYPE, summary="Prometheus metrics")
async def metrics(request: Request) -> Response[str]:
    service = _service(request)
    depth = service.batcher.pending if service.batcher is not None else 0
    size = len(service.cache) if service.cache is not None else 0
    return Response(service.metrics.render(queue_depth=depth, cache_size=size), media_type=CONTENT_TYPE)


# ------------------------------------------------------------------------------------ errors
def describe(exc: Exception) -> tuple[int, ErrorBody, dict[str, str]]:
    """(status, body, headers) for any exception: the one place statuses are decided."""
    status, code = _classify(exc)
    detail = str(getattr(exc, "detail", "") or exc) if isinstance(exc, HTTPException) else str(exc)
    body = ErrorBody(error=code, detail=" ".join(detail.split()) or code, status=status)
    headers: dict[str, str] = {}
    if isinstance(exc, UnknownTaskError):
        body.known = exc.known
    elif isinstance(exc, (QueueFullError, ServerBusyError)) or status == 503:
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
    elif isinstance(exc, HTTPException) and isinstance(exc.extra, list):
        body.errors = [_field_error(e) for e in exc.extra]
        if body.errors and body.errors[0].message == "'data'":  # Litestar's wording for an empty body
            body.detail, body.errors = "the request body is empty; send a JSON object", None
        elif body.errors:  # say what is wrong in the one line, not only "Validation failed"
            where = "; ".join(f"{e.key}: {e.message}" if e.key else e.message for e in body.errors[:3])
            body.detail = " ".join(f"invalid request: {where}".split())
    return status, body, headers


def _classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, UnknownTaskError):
        return 404, "unknown_task"
    if isinstance(exc, PromptUnavailableError):
        return 409, "prompt_unavailable"
    if isinstance(exc, RequestTooLargeError):
        return 413, "too_large"
    if isinstance(exc, TaskInputError):
        return 422, "missing_field"
    if isinstance(exc, (QueueFullError, ServerBusyError)):
        return 503, "unavailable"
    if isinstance(exc, ScoringError):
        return (503, "scoring_failed") if exc.transient else (422, "scoring_failed")
    if isinstance(exc, (InvalidRequestError, SppError)):
        return 422, "invalid_request"
    if isinstance(exc, HTTPException):
        if exc.status_code == 400:  # Litestar's body/query validation and JSON decode errors
            return 422, "invalid_request"
        return exc.status_code, _http_code(exc.status_code)
    return 500, "internal_error"


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(status, "http_error")


def _field_error(item: Any) -> FieldError:
    if isinstance(item, dict):
        return FieldError(key=item.get("key"), message=str(item.get("message", "")))
    return FieldError(key=None, message=str(item))


def _error_handler(request: Request, exc: Exception) -> Response[ErrorBody]:
    status, body, headers = describe(exc)
    if status >= 500 and status != 503:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        body.detail = "internal error (see the server log)"
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)


# ----------------------------------------------------------------------------------- metrics
def _request_metrics(app: ASGIApp) -> ASGIApp:
    """Count every /predict answer by task and status and time it (errors included)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH:
            await app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_status)
        except Exception as exc:  # reached only if Litestar did not turn it into a response
            status = describe(exc)[0]
            raise
        finally:
            context = scope.get("state", {}).get("spp", {})  # filled by predict once the task resolves
            service: Service = scope["app"].state.spp
            service.metrics.observe_request(context.get("task"), status, time.perf_counter() - start)

    return middleware


# --------------------------------------------------------------------------------------- app
def create_app(settings: ServeSettings) -> Litestar:
    """The server app; nothing heavy happens until the lifespan starts (uvicorn startup)."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned = await service.start()  # False when run_server started it already
        try:
            yield
        finally:
            if owned:
                await service.stop()

    max_body = max(1 << 20, settings.max_inputs * settings.max_input_chars * 6 + (1 << 16))
    return Litestar(
        route_handlers=[predict, tasks, health, ready, metrics],
        lifespan=[lifespan],
        state=_state(service),
        exception_handlers={Exception: _error_handler},
        middleware=[_request_metrics],
        request_max_body_size=max_body,
        logging_config=None,  # leave logging to the host process (the CLI, uvicorn, tests)
        openapi_config=OpenAPIConfig(
            title="spp server",
            version=_version(),
            description="Soft-prompt classification with one frozen T5; any number of task prompts, mixed batches.",
        ),
    )


async def run_server(settings: ServeSettings) -> None:
    """Serve ``create_app(settings)`` with uvicorn until SIGINT/SIGTERM, then shut down cleanly.

    The service starts before uvicorn does, in the same event loop, so a startup failure (bad
    backbone, unknown --preload reference) raises its one-line SppError here instead of being
    logged as a lifespan traceback.
    """
    import uvicorn

    app = create_app(settings)
    service: Service = app.state.spp
    await service.start()
    try:
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level)
        await uvicorn.Server(config).serve()
    finally:
        await service.stop()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spp")
    except PackageNotFoundError:
        return "0+unknown"


def _state(service: Service):
    from litestar.datastructures import State

    return State({"spp": service})
