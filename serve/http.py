"""HTTP plumbing under the handlers: how a request body is read, and the body's OpenAPI schema.

:class:`SppRequest` is the app's ``request_class``. Litestar reads a JSON body through
``Request.json()`` -> ``Request.body()``; the overrides here make every way a client can get
that wrong a 4xx from the error table in :mod:`spp.serve.app` instead of a 500 or a hang:

* a content type other than ``application/json`` (optionally ``; charset=utf-8``) -> 415;
* JSON nested deeper than :data:`MAX_JSON_DEPTH` (a 2 KB body can nest 1000 deep) -> 422,
  checked before decoding;
* a body that does not arrive within ``body_timeout_s`` (e.g. ``Transfer-Encoding: chunked``
  on a body that is not chunk-encoded: the HTTP parser waits for a chunk-size line that never
  comes) -> 408 and the connection is closed;
* a client that disconnects mid-body -> 499 (nobody reads it; not a server error).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from litestar import Request
from litestar.exceptions import InternalServerException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from spp.serve.errors import (
    BodyTimeoutError,
    ClientDisconnectedError,
    InvalidRequestError,
    UnsupportedMediaTypeError,
)
from spp.serve.schemas import PredictRequest

JSON_MEDIA_TYPE = "application/json"
# A /predict body nests 3 deep ({"inputs": [{...}]}). Checked before decoding, not left to the
# decoder's RecursionError: that depends on the interpreter's recursion limit, which torch's
# Inductor raises to 2000 when it compiles, so the same 1000-deep body got "nested too deeply"
# before the server's first compile and a schema error after it.
MAX_JSON_DEPTH = 64


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body``'s arrays and objects nest deeper than ``limit``, without decoding it
    (brackets inside strings do not count; malformed JSON is left to the decoder).

    A body with few brackets returns at once; otherwise a few vectorised passes: 3 MB of ``[],``
    took 85 ms (decoding it: 390 ms), 3 MB of short strings 76 ms (decoding: 51 ms)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot nest deeper than it has brackets
    a = np.frombuffer(body, dtype=np.uint8)
    at = np.arange(a.size, dtype=np.int32)
    # a quote is escaped when an odd number of backslashes precede it
    last_plain = np.maximum.accumulate(np.where(a == 0x5C, np.int32(-1), at))  # last non-backslash so far
    run = at - 1 - np.concatenate((np.array([-1], dtype=np.int32), last_plain[:-1]))  # backslashes just before
    inside = np.cumsum((a == 0x22) & (run % 2 == 0), dtype=np.int32) % 2 == 1  # in a string (opening quote too)
    step = ((a == 0x5B) | (a == 0x7B)).astype(np.int8) - ((a == 0x5D) | (a == 0x7D))  # "[{" +1, "]}" -1
    step[inside] = 0
    depth = np.cumsum(step, dtype=np.int32)  # after each byte
    return int(depth.max()) > limit


def check_json_content_type(header: str | None) -> None:
    """Accept ``application/json`` with no charset or charset utf-8 (RFC 8259: JSON is UTF-8)."""
    media, *params = (header or "").split(";")
    if media.strip().lower() != JSON_MEDIA_TYPE:
        got = f"Content-Type {media.strip()!r}" if media.strip() else "no Content-Type"
        raise UnsupportedMediaTypeError(f"the body must be JSON: send Content-Type: {JSON_MEDIA_TYPE} ({got})")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaTypeError(
                f"JSON bodies are UTF-8; charset {value.strip()[:40]!r} is not accepted (send charset=utf-8 or none)"
            )


class SppRequest(Request):
    """A Request whose JSON body is read with a media-type check, a deadline and a depth guard."""

    async def json(self) -> Any:
        check_json_content_type(self.headers.get("content-type"))
        if json_too_deep(await self.body()):
            raise InvalidRequestError(f"the JSON body is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
        try:
            return await super().json()
        except RecursionError:  # a limit below MAX_JSON_DEPTH (not this interpreter's default)
            raise InvalidRequestError("the JSON body is nested too deeply") from None

    async def body(self) -> bytes:
        timeout = self.app.state.spp.settings.body_timeout_s
        try:
            return await asyncio.wait_for(super().body(), timeout)
        except asyncio.TimeoutError:
            raise BodyTimeoutError(
                f"the request body did not arrive within {timeout:g} s (is Transfer-Encoding: chunked "
                "used on a body that is not chunk-encoded?)"
            ) from None
        except InternalServerException:  # Litestar's word for an http.disconnect mid-body
            raise ClientDisconnectedError("the client disconnected before its body arrived") from None


class PredictRequestSchema(OpenAPISchemaPlugin):
    """Document what the server enforces, so that a schema-valid body is one it can answer.

    The properties come from Litestar's own msgspec plugin; this adds ``oneOf`` (exactly one
    of ``inputs`` and ``texts``), ``additionalProperties: false`` (the Struct forbids unknown
    fields), and the request limits of these settings: 1..max_inputs items, texts of at most
    max_input_chars characters. ``{}`` is invalid by the schema as by the server.
    """

    def __init__(self, max_inputs: int, max_input_chars: int) -> None:
        self.max_inputs = max_inputs
        self.max_input_chars = max_input_chars

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.annotation is PredictRequest

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        builtin = next(p for p in schema_creator.plugins
                       if p is not self and schema_creator.plugin_supports_field(p, field_definition))
        schema = builtin.to_openapi_schema(field_definition, schema_creator)
        for name, prop in (schema.properties or {}).items():
            # "list[...] | None" is documented as oneOf [array, null]; null is refused, keep the array
            array = next(s for s in prop.one_of if s.type == OpenAPIType.ARRAY)
            array.min_items, array.max_items, array.description = 1, self.max_inputs, prop.description
            if name == "texts":
                array.items.max_length = self.max_input_chars
            schema.properties[name] = array
        schema.one_of = [Schema(required=["inputs"]), Schema(required=["texts"])]
        schema.additional_properties = False
        schema.description = "Exactly one of inputs, texts."
        return schema
