"""The error table: every row answers its status, code, body and headers; handlers get the Service by DI."""

from __future__ import annotations

import pytest
from litestar import Litestar, get
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.testing import TestClient

from spp.prompts.errors import ConfigError, SppError
from spp.prompts.tasks import TaskInputError
from spp.serve.app import ERROR_STATUSES, create_app, error_handlers, provide_service
from spp.serve import errors as err

# (table key, exception raised by a handler, status, code, Retry-After or None)
CASES = [
    (err.UnauthorizedError, err.UnauthorizedError("no key", invalid_token=False), 401, "unauthorized", None),
    (err.BodyTimeoutError, err.BodyTimeoutError("slow body"), 408, "timeout", None),
    (err.UnsupportedMediaTypeError, err.UnsupportedMediaTypeError("text/plain"), 415, "unsupported_media_type", None),
    (err.ClientDisconnectedError, err.ClientDisconnectedError("gone"), 499, "client_closed_request", None),
    (err.UnknownTaskError, err.UnknownTaskError("no prompt named nope", ["a", "b"]), 404, "unknown_task", None),
    (err.PromptUnavailableError, err.PromptUnavailableError("t@1", "sha256 mismatch"), 409, "prompt_unavailable", None),
    (err.RequestTooLargeError, err.RequestTooLargeError("65 inputs"), 413, "too_large", None),
    (TaskInputError, TaskInputError("missing field(s) b"), 422, "missing_field", None),
    (err.InvalidRequestError, err.InvalidRequestError("bad reference"), 422, "invalid_request", None),
    (err.ScoringError, err.ScoringError("bad input", transient=False), 422, "scoring_failed", None),
    (err.ScoringError, err.ScoringError("out of memory", transient=True), 503, "scoring_failed", "1"),
    (err.QueueFullError, err.QueueFullError("queue is full", retry_after_s=7), 503, "unavailable", "7"),
    (err.ServerBusyError, err.ServerBusyError("not running"), 503, "unavailable", "1"),
    (SppError, ConfigError("bad value"), 422, "invalid_request", None),
    (400, ValidationException("Validation failed", extra=[{"key": "texts", "message": "Expected `array`"}]),
     422, "invalid_request", None),
    (400, ClientException("Invalid content-length"), 422, "invalid_request", None),
    (404, NotFoundException(), 404, "not_found", None),
    (405, MethodNotAllowedException(headers={"allow": "GET, OPTIONS"}), 405, "method_not_allowed", None),
    (413, ClientException(status_code=413), 413, "too_large", None),  # as Litestar's body limit
    (HTTPException, HTTPException(status_code=418, detail="teapot"), 418, "http_error", None),
    (HTTPException, ServiceUnavailableException(), 503, "http_error", "1"),
    (Exception, RuntimeError("secret internals"), 500, "internal_error", None),
]


def _raising_app(exc: Exception) -> Litestar:
    @get("/boom")
    async def boom() -> None:
        raise exc

    return Litestar([boom], exception_handlers=error_handlers(), logging_config=None)


def test_every_row_of_the_table_has_a_case():
    assert {key for key, *_ in CASES} == set(ERROR_STATUSES)


@pytest.mark.parametrize("key, exc, status, code, retry_after", CASES, ids=lambda v: getattr(v, "__name__", None))
def test_each_exception_answers_its_status_and_a_json_error(key, exc, status, code, retry_after):
    with TestClient(_raising_app(exc), raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code and body["status"] == status and body["detail"]
    assert r.headers.get("retry-after") == retry_after
    if isinstance(exc, err.UnknownTaskError):
        assert body["known"] == ["a", "b"]
    if isinstance(exc, ValidationException):
        assert body["detail"] == "invalid request: texts: Expected `array`"
        assert body["errors"] == [{"key": "texts", "message": "Expected `array`"}]
    if status == 500:
        assert "secret" not in r.text and body["detail"] == "internal error (see the server log)"
    for name, value in (getattr(exc, "headers", None) or {}).items():  # WWW-Authenticate, Allow, Connection
        assert r.headers[name] == value


def test_route_handlers_receive_the_service_by_dependency_injection(make_settings):
    app = create_app(make_settings())  # nothing loads before the lifespan runs
    assert app.dependencies["service"].dependency is provide_service
    handlers = {h.handler_name: h for route in app.routes for h in getattr(route, "route_handlers", [])}
    for name in ("predict", "tasks", "ready", "metrics"):
        params = handlers[name].parsed_fn_signature.parameters
        assert "service" in params and "request" not in params, name
        assert handlers[name].resolve_dependencies()["service"].dependency is provide_service
    assert provide_service(app.state) is app.state.spp
    assert "context" in handlers["predict"].parsed_fn_signature.parameters  # the metrics middleware reads it
