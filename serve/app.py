"""The Litestar app: many task prompts served from ONE frozen T5, tasks mixed in each batch.

``create_app(settings)`` builds the app; its lifespan loads tokenizer and backbone once and
starts the batcher (see :mod:`spp.serve.service`). Handlers receive the
:class:`~spp.serve.service.Service` by dependency injection (the ``service`` dependency, read
from ``app.state.spp``). Endpoints:

    POST /predict?task=REF   REF = rte | rte@3 | rte@prod; body {"inputs": [...]} or {"texts": [...]}
    GET  /tasks              what can be served: names, versions, aliases, metrics, fields, labels
    GET  /health             liveness;  GET /ready: model loaded, batcher up, registry reachable
    GET  /metrics            Prometheus text;  GET /schema: OpenAPI (/schema/openapi.json)

Errors always answer a JSON :class:`~spp.serve.schemas.ErrorBody`, never a 500 for bad input.
``ERROR_STATUSES`` is the one table from exception to (status, code); each row becomes one
entry of the app's ``exception_handlers``, so Litestar picks the row (an HTTPException by its
status code first, then any exception by the most specific class in its MRO):

    UnauthorizedError       401 unauthorized         (WWW-Authenticate: Bearer; see spp.serve.auth)
    UnknownTaskError        404 unknown_task         (``known`` lists the served names)
    PromptUnavailableError  409 prompt_unavailable   (corrupt blob, other backbone, no spec)
    BodyTimeoutError        408 timeout              (the body did not arrive in body_timeout_s)
    RequestTooLargeError    413 too_large            (too many / too long inputs)
    UnsupportedMediaTypeError 415 unsupported_media_type (not application/json in UTF-8)
    TaskInputError          422 missing_field        (an input lacks a template field)
    InvalidRequestError     422 invalid_request      (bad reference, neither inputs nor texts)
    ScoringError            422 scoring_failed       (503 when ``transient``: OOM, device)
    QueueFullError          503 unavailable
    ServerBusyError         503 unavailable          (not running, registry unavailable)
    ClientDisconnectedError 499 client_closed_request (gone mid-body; nobody reads it)
    SppError                422 invalid_request      (any other user-facing error)
    HTTP 400                422 invalid_request      (Litestar: malformed JSON, wrong types)
    HTTP 404 / 405 / 413    404 not_found / 405 method_not_allowed / 413 too_large
    HTTPException           its own status, http_error
    Exception               500 internal_error       (logged; the body hides the message)

Every 503 carries Retry-After (the exception's ``retry_after_s``, else 1 second); an
exception's own ``headers`` (WWW-Authenticate, Allow on a 405) are sent too. Error details
never show absolute filesystem paths (:func:`~spp.serve.errors.redact_paths`). The request
body is read by :class:`~spp.serve.http.SppRequest` (media type, depth, deadline).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, Callable, Mapping, NamedTuple

from litestar import Litestar, MediaType, Request, Response, Router, get, post
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components
from litestar.params import Parameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from spp.prompts.errors import SppError
from spp.prompts.tasks import TaskInputError
from spp.serve.auth import SECURITY, openapi_components, require_api_key
from spp.serve.errors import (
    BodyTimeoutError,
    ClientDisconnectedError,
    InvalidRequestError,
    PromptUnavailableError,
    QueueFullError,
    RequestTooLargeError,
    ScoringError,
    ServerBusyError,
    UnauthorizedError,
    UnknownTaskError,
    UnsupportedMediaTypeError,
    redact_paths,
)
from spp.serve.http import PredictRequestSchema, SppRequest
from spp.serve.metrics import CONTENT_TYPE, Metrics
from spp.serve.schemas import (
    ErrorBody,
    FieldError,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    TasksResponse,
)
from spp.serve.service import RequestContext, Service
from spp.serve.settings import ServeSettings

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

PREDICT_PATH = "/predict"
# The reference grammar of spp.registry.refs as a pattern (a little stricter: no leading zeros,
# versions below 10**18, aliases with a letter), so schema-valid references parse. Documented
# only (schema_extra): parse_ref stays the one check, with its one-line messages.
REF_PATTERN = r"^[A-Za-z0-9](\.?[A-Za-z0-9_+-])*(@([1-9][0-9]{0,17}|[0-9]*[A-Za-z](\.?[A-Za-z0-9_+-])*))?$"
_ERROR_RESPONSES = {
    401: ResponseSpec(ErrorBody, description="No or unknown API key (only when the server has keys)."),
    404: ResponseSpec(ErrorBody, description="Unknown task; `known` lists the served names."),
    409: ResponseSpec(ErrorBody, description="The prompt cannot be served here (corrupt, other backbone)."),
    408: ResponseSpec(ErrorBody, description="The body did not arrive in time; the connection is closed."),
    413: ResponseSpec(ErrorBody, description="Too many inputs, an input too long, or the body too large."),
    415: ResponseSpec(ErrorBody, description="The body is not application/json in UTF-8."),
    422: ResponseSpec(ErrorBody, description="Malformed JSON, wrong types, bad reference, missing field."),
    503: ResponseSpec(ErrorBody, description="Queue full or server not running; see Retry-After."),
}


# ------------------------------------------------------------------------- dependencies
def provide_service(state: State) -> Service:
    """The app's one Service; the app state holds it so run_server and tests reach it too."""
    return state.spp


def provide_request_context(scope: Scope) -> RequestContext:
    """Filled by predict, read by the metrics middleware after the answer (errors included).

    A dataclass, not a dict: Litestar hands a handler a converted copy of a dict dependency.
    """
    return scope.setdefault("state", {}).setdefault("spp", RequestContext())


# ------------------------------------------------------------------------------ handlers
@post(PREDICT_PATH, status_code=200, responses=_ERROR_RESPONSES, summary="Classify inputs with a task's prompt")
async def predict(
    service: Service,
    data: PredictRequest,
    context: RequestContext,
    task: Annotated[str, Parameter(description="The prompt: NAME (latest), NAME@VERSION or NAME@ALIAS, e.g. rte@prod.",
                                   schema_extra={"pattern": REF_PATTERN, "maxLength": 128})],
) -> PredictResponse:
    """Score every input under the prompt ``task`` resolves to now (alias moves apply at once)."""
    return await service.predict(task, data, context)


@get("/tasks", summary="Prompts that can be served", responses={401: _ERROR_RESPONSES[401]})
async def tasks(service: Service) -> TasksResponse:
    return await service.tasks()


@get("/health", summary="Liveness")
async def health(service: Service) -> HealthResponse:
    return service.health()


@get("/ready", summary="Readiness: model loaded, batcher running, registry reachable",
     responses={503: ResponseSpec(ReadyResponse, description="Not ready; `detail` says why.")})
async def ready(service: Service) -> Response[ReadyResponse]:
    body = await service.readiness()
    return Response(body, status_code=200 if body.status == "ready" else 503)


@get("/metrics", media_type=CONTENT_TYPE, summary="Prometheus metrics", responses={401: _ERROR_RESPONSES[401]})
async def metrics(service: Service) -> Response[str]:
    return Response(service.render_metrics(), media_type=CONTENT_TYPE)


# -------------------------------------------------------------------------------- errors
class ErrorStatus(NamedTuple):
    """One row of the error table: the HTTP status and the machine code of the JSON body."""

    status: int | None  # None: the HTTPException's own status_code
    code: str
    transient_status: int | None = None  # used instead when the exception says ``transient``

    def status_for(self, exc: Exception) -> int:
        if self.transient_status is not None and getattr(exc, "transient", False):
            return self.transient_status
        if self.status is None:
            return int(getattr(exc, "status_code", 500))
        return self.status


# Int keys are Litestar's own HTTPExceptions by status code; Litestar matches them first.
ERROR_STATUSES: Mapping[int | type[Exception], ErrorStatus] = MappingProxyType({
    UnauthorizedError: ErrorStatus(401, "unauthorized"),
    UnknownTaskError: ErrorStatus(404, "unknown_task"),
    PromptUnavailableError: ErrorStatus(409, "prompt_unavailable"),
    BodyTimeoutError: ErrorStatus(408, "timeout"),
    RequestTooLargeError: ErrorStatus(413, "too_large"),
    UnsupportedMediaTypeError: ErrorStatus(415, "unsupported_media_type"),
    TaskInputError: ErrorStatus(422, "missing_field"),
    InvalidRequestError: ErrorStatus(422, "invalid_request"),
    ScoringError: ErrorStatus(422, "scoring_failed", transient_status=503),
    QueueFullError: ErrorStatus(503, "unavailable"),
    ServerBusyError: ErrorStatus(503, "unavailable"),
    ClientDisconnectedError: ErrorStatus(499, "client_closed_request"),
    SppError: ErrorStatus(422, "invalid_request"),
    400: ErrorStatus(422, "invalid_request"),  # body/query validation and JSON decoding: the client's input
    404: ErrorStatus(404, "not_found"),
    405: ErrorStatus(405, "method_not_allowed"),
    413: ErrorStatus(413, "too_large"),
    HTTPException: ErrorStatus(None, "http_error"),
    Exception: ErrorStatus(500, "internal_error"),
})


def error_handlers() -> dict[int | type[Exception], Callable[[Request, Exception], Response[ErrorBody]]]:
    """Litestar's ``exception_handlers``: one handler per row of ERROR_STATUSES."""
    return {key: _error_handler(row) for key, row in ERROR_STATUSES.items()}


def _error_handler(row: ErrorStatus) -> Callable[[Request, Exception], Response[ErrorBody]]:
    def handle(request: Request, exc: Exception) -> Response[ErrorBody]:
        status = row.status_for(exc)
        body = _error_body(exc, status, row.code)
        headers = dict(getattr(exc, "headers", None) or {})  # WWW-Authenticate, Allow (405), ...
        if status == 503:
            headers["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
        if status >= 500 and status != 503:  # a server bug: log it whole, answer without internals
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            body.detail = "internal error (see the server log)"
        return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)

    return handle


def _error_body(exc: Exception, status: int, code: str) -> ErrorBody:
    detail = str(getattr(exc, "detail", "") or exc) if isinstance(exc, HTTPException) else str(exc)
    body = ErrorBody(error=code, detail=redact_paths(" ".join(detail.split())) or code, status=status)
    if isinstance(exc, UnknownTaskError):
        body.known = exc.known
    elif status != 503 and isinstance(exc, HTTPException) and isinstance(exc.extra, list):
        body.errors = [_field_error(e) for e in exc.extra]
        if body.errors and body.errors[0].message == "'data'":  # Litestar's wording for an empty body
            body.detail, body.errors = "the request body is empty; send a JSON object", None
        elif body.errors:  # say what is wrong in the one line, not only "Validation failed"
            where = "; ".join(f"{e.key}: {e.message}" if e.key else e.message for e in body.errors[:3])
            body.detail = " ".join(f"invalid request: {where}".split())
    return body


def _field_error(item: Any) -> FieldError:
    if isinstance(item, dict):
        return FieldError(key=item.get("key"), message=str(item.get("message", "")))
    return FieldError(key=None, message=str(item))


# ----------------------------------------------------------------------------------- metrics
def _request_metrics(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    """Count every /predict answer by task and status and time it (errors included)."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] != PREDICT_PATH:
                await app(scope, receive, send)
                return
            start, status = time.perf_counter(), 500  # 500 stays if no answer was started

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                context = scope.get("state", {}).get("spp")  # filled by predict once the task resolves
                task = context.task if isinstance(context, RequestContext) else None
                metrics.observe_request(task, status, time.perf_counter() - start)

        return middleware

    return factory


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
        route_handlers=_routes(settings),
        lifespan=[lifespan],
        request_class=SppRequest,
        plugins=[PredictRequestSchema(settings.max_inputs, settings.max_input_chars)],
        allowed_hosts=AllowedHostsConfig(list(settings.allowed_hosts), exclude=["/health", "/ready"])
        if settings.allowed_hosts else None,
        state=State({"spp": service}),
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "context": Provide(provide_request_context, sync_to_thread=False),
        },
        exception_handlers=error_handlers(),
        middleware=[_request_metrics(service.metrics)],
        request_max_body_size=max_body,
        logging_config=None,  # leave logging to the host process (the CLI, uvicorn, tests)
        openapi_config=OpenAPIConfig(
            title="spp server",
            version=_version(),
            description="Soft-prompt classification with one frozen T5; any number of task prompts, mixed batches.",
            components=openapi_components() if settings.api_keys else Components(),
        ),
    )


def _routes(settings: ServeSettings) -> list:
    """/health and /ready always open; the data endpoints behind the API-key guard (a no-op, and
    no security in the schema, without keys). /metrics is guarded unless metrics_auth is off."""
    guarded = [predict, tasks] + ([metrics] if settings.metrics_auth else [])
    open_ = [health, ready] + ([] if settings.metrics_auth else [metrics])
    security = SECURITY if settings.api_keys else None
    return [Router("/", route_handlers=guarded, guards=[require_api_key], security=security), *open_]


def uvicorn_config(app: Litestar, settings: ServeSettings) -> "uvicorn.Config":
    """The uvicorn configuration ``spp serve`` runs: address, log level, TLS when configured.

    The HTTP parser is h11 whatever else is installed: with httptools (uvicorn[standard]) a
    malformed request (a chunked header on a plain body) got a plain-text 400 from the parser
    instead of the app's JSON 408, and it bought no throughput (2 AMD EPYC vCPUs, 64 clients,
    interleaved: 33.5/30.6/30.5 requests/s with httptools and uvloop, 33.6/32.5/31.6 without).
    """
    import uvicorn

    tls = {}
    if settings.ssl_certfile is not None:
        tls = {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)}
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, http="h11", **tls)


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
        await uvicorn.Server(uvicorn_config(app, settings)).serve()
    finally:
        await service.stop()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spp")
    except PackageNotFoundError:
        return "0+unknown"

