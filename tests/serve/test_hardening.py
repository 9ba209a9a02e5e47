"""Client input never produces a 500: each repro of issue 12 as a test.

In-process (Litestar's TestClient) where the bug is in the app; against a real uvicorn on
127.0.0.1 with a raw socket where it is below the app (a chunked header on a plain body,
a client that leaves mid-body).
"""

from __future__ import annotations

import sys

import json
import logging
import socket
import time

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spp.registry import parse_ref
from spp.serve.app import REF_PATTERN
from spp.serve.errors import redact_paths

JSON = {"content-type": "application/json"}


def _post(client, task: str, content: bytes, headers=JSON):
    return client.post("/predict", params={"task": task}, content=content, headers=headers)


def _error(r, status: int, code: str, fragment: str = "") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["error"] == code and fragment in body["detail"], body
    return body


@pytest.mark.parametrize("content", [
    b'{"texts": ["a\xff\xfeb"]}',
    b'{"inputs": [{"review": "caf\xe9"}]}',
    b'{"texts": ["a"], "\xff": 1}',
    b'{"texts": ["\\ud800"]}',  # a lone surrogate escape
])
def test_invalid_utf8_inside_json_is_422(client, content):
    _error(_post(client, "sentiment", content), 422, "invalid_request")


@pytest.mark.parametrize("content_type", [
    "application/json; charset=latin-1", "application/json; charset=ISO-8859-1", 'application/json; charset="utf-16"',
])
def test_a_json_charset_other_than_utf8_is_415(client, content_type):
    body = '{"texts": ["café"]}'.encode("latin-1")
    _error(_post(client, "sentiment", body, {"content-type": content_type}), 415, "unsupported_media_type", "UTF-8")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx", "application/xml"])
def test_non_json_content_types_are_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/predict?task=sentiment", content=b'{"texts": ["a"]}', headers=headers)
    _error(r, 415, "unsupported_media_type", "Content-Type: application/json")


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON", "application/json; charset=UTF-8",
                                          'application/json;charset="utf-8"'])
def test_json_content_types_are_accepted(client, content_type):
    r = _post(client, "sentiment", b'{"texts": ["a"]}', {"content-type": content_type})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("content", [
    b'{"texts": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b"[" * 1000 + b"]" * 1000,
    b'{"inputs": [{"review": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}]}",
], ids=["texts-arrays", "top-level-arrays", "field-objects"])
@pytest.mark.parametrize("recursion_limit", [1000, 2000], ids=["python-default", "after-inductor"])
def test_deeply_nested_json_in_a_small_body_is_422(client, content, recursion_limit):
    """The same answer whatever the interpreter's recursion limit (Inductor raises it to 2000
    when it compiles; the decoder's RecursionError used to be the only guard)."""
    assert len(content) <= 8000
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(recursion_limit)
    try:
        _error(_post(client, "sentiment", content), 422, "invalid_request", "nested too deeply")
    finally:
        sys.setrecursionlimit(before)


@pytest.mark.parametrize(("body", "deep"), [
    (b"[" * 64 + b"]" * 64, False), (b"[" * 65 + b"]" * 65, True),
    (b'{"a":' * 65 + b"1" + b"}" * 65, True),
    (b'["' + b"[" * 100 + b'"]', False),  # brackets in a string do not nest
    (b'{"a": "\\\\"' + b"[" * 70 + b"]" * 70 + b"}", True),  # "\\\\" is one backslash: the quote ends the string
    (b'{"a": "\\"' + b"[" * 100 + b'"}', False),  # an escaped quote does not end the string
    (b"[" + b"[]," * 100 + b"[]]", False),  # many brackets, shallow
])
def test_json_depth_is_measured_outside_strings(body, deep):
    from spp.serve.http import json_too_deep

    assert json_too_deep(body) is deep


@pytest.mark.parametrize("ref", ["sentiment@99999999999999999999", "sentiment@\u00b2", "sentiment@\u0661",
                                 "sentiment@\uff11", "sentiment@" + "9" * 5000], ids=lambda ref: ref[:32])
def test_bad_versions_are_422_never_a_lookup(client, ref):
    r = client.post("/predict", params={"task": ref}, json={"texts": ["a"]})
    _error(r, 422, "invalid_request", "versions ")


def test_405_answers_carry_allow(client):
    r = client.get("/predict?task=sentiment")
    _error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"] and "GET" not in r.headers["allow"]
    r = client.delete("/tasks")
    _error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


def test_the_schema_says_exactly_one_of_inputs_and_texts(client):
    schema = client.get("/schema/openapi.json").json()
    body = schema["components"]["schemas"]["PredictRequest"]
    for invalid in ({}, {"inputs": [{"review": "x"}], "texts": ["x"]}, {"texts": ["x"], "other": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(invalid, body)
        _error(client.post("/predict?task=sentiment", json=invalid), 422, "invalid_request")  # the server agrees
    for valid in ({"texts": ["x"]}, {"inputs": [{"review": "x"}]}):
        jsonschema.validate(valid, body)
        assert client.post("/predict?task=sentiment", json=valid).status_code == 200
    predict = schema["paths"]["/predict"]["post"]
    assert {"401", "404", "408", "413", "415", "422", "503"} <= set(predict["responses"])
    assert "NAME@ALIAS" in predict["parameters"][0]["description"]


def test_tasks_does_not_call_a_corrupt_blob_servable(client, world, kit):
    def servable() -> dict[str, tuple[bool, str | None]]:
        tasks = client.get("/tasks").json()["tasks"]
        return {t["name"]: (t["versions"][0]["servable"], t["versions"][0]["reason"]) for t in tasks}

    assert servable()["pair"] == (True, None)  # checked and remembered...
    kit.corrupt_blob(world.registry, "pair@1")  # ...until the file changes
    ok, reason = servable()["pair"]
    assert ok is False and "sha256 mismatch" in reason and str(world.root) not in reason
    assert servable()["sentiment"] == (True, None)
    r = client.post("/predict?task=pair", json={"texts": ["x"]})
    body = _error(r, 409, "prompt_unavailable", "sha256 mismatch")
    assert str(world.root) not in r.text and "/blobs/" not in body["detail"]


def test_redact_paths_keeps_urls_and_routes():
    assert redact_paths("blob missing (/srv/reg/blobs/ab/ab12.safetensors); run") == "blob missing (…/ab12.safetensors); run"
    assert redact_paths("cannot open '/home/me/x/y'") == "cannot open '…/y'"
    for kept in ("POST /predict", "http://h:1/a/b/c", "a/b/c relative", "rte@3"):
        assert redact_paths(kept) == kept


# ------------------------------------------------------------------------ below the app
def _raw_exchange(port: int, request: bytes, *, close_after_send: bool = False, timeout: float = 15) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if close_after_send:
            return b""
        out = b""
        while chunk := sock.recv(65536):  # uvicorn closes the connection after the answer
            out += chunk
        return out


@pytest.fixture
def raw_server(world, make_settings, run_uvicorn, kit, caplog):
    caplog.set_level(logging.INFO)
    port = kit.free_port()
    url, app, server, thread = run_uvicorn(make_settings(port=port, body_timeout_s=1.0, log_level="info"))
    return port, app


def test_a_chunked_header_on_a_plain_body_is_408_in_bounded_time(raw_server, caplog):
    port, app = raw_server
    request = (b"POST /predict?task=sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + b'{"texts": ["a"]}')
    start = time.monotonic()
    answer = _raw_exchange(port, request)
    took = time.monotonic() - start
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "timeout" and took < 5, took
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert 'status="408"' in app.state.spp.render_metrics() and 'status="500"' not in app.state.spp.render_metrics()


def test_the_http_parser_is_h11_whatever_is_installed(make_settings):
    """The 408 above comes from the app; httptools (uvicorn[standard]) would answer that request
    from its parser with a plain-text 400, so spp serve pins the parser."""
    from spp.serve.app import create_app, uvicorn_config

    settings = make_settings()
    assert uvicorn_config(create_app(settings), settings).http == "h11"


def test_a_client_that_leaves_mid_body_is_not_a_server_error(raw_server, caplog):
    port, app = raw_server
    request = (b"POST /predict?task=sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n" + b'{"texts": [')
    _raw_exchange(port, request, close_after_send=True)
    deadline = time.monotonic() + 10
    while 'status="499"' not in app.state.spp.render_metrics():
        assert time.monotonic() < deadline, app.state.spp.render_metrics()
        time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert 'status="500"' not in app.state.spp.render_metrics()


@settings(max_examples=300, deadline=None)
@given(ref=st.from_regex(REF_PATTERN, fullmatch=True).filter(lambda r: len(r) <= 128))
def test_every_reference_the_schema_admits_parses(ref):
    """The task parameter's documented pattern admits only references the server can parse."""
    parsed = parse_ref(ref)
    assert str(parsed) == ref or ref.endswith("@latest")


def test_empty_texts_are_scored_whatever_the_shard_count(world, make_settings):
    # the schema admits empty strings; with 2 shards, ["", ""] once left one shard no rows and the
    # tokenizer refused the empty call: a 422 "scoring_failed" to a valid request (schemathesis)
    from litestar.testing import TestClient

    from spp.serve.app import create_app

    with TestClient(create_app(make_settings(shards=2)), raise_server_exceptions=False) as c:
        for texts in (["", ""], ["", "", ""], ["", "x"]):
            r = c.post("/predict", params={"task": "sentiment@prod"}, json={"texts": texts})
            assert r.status_code == 200, (texts, r.text)
            preds = r.json()["predictions"]
            assert len(preds) == len(texts) and all(p["label"] in ("negative", "positive") for p in preds)
