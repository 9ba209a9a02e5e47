"""Bearer-token authentication for the server's data endpoints (a Litestar guard).

Keys come from :class:`~spp.serve.settings.ServeSettings` (``--api-key-file`` or
``$SPP_API_KEYS``). The guard runs before the body is read, so an unauthenticated client
cannot make the server parse anything. Every key is compared with ``hmac.compare_digest``
(constant time, and every key is tried so the time does not say which one came close). No
token, valid or not, is ever logged or echoed in a body.
"""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityScheme

from spp.serve.errors import UnauthorizedError

SCHEME = "bearer"
SECURITY = [{SCHEME: []}]  # an operation's OpenAPI security requirement


def openapi_components() -> Components:
    """The bearer security scheme; a new object per app (Litestar fills in its schemas)."""
    return Components(security_schemes={SCHEME: SecurityScheme(type="http", scheme="bearer")})


def key_matches(token: str, keys: tuple[str, ...]) -> bool:
    """Whether ``token`` is one of ``keys``, comparing against all of them in constant time each."""
    presented = token.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key.encode("utf-8"))
    return found


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: pass when no keys are configured or ``Authorization: Bearer <key>`` holds one."""
    keys: tuple[str, ...] = connection.app.state.spp.settings.api_keys
    if not keys:
        return
    scheme, _, token = connection.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("an API key is required: send Authorization: Bearer <key>", invalid_token=False)
    if not key_matches(token.strip(), keys):
        raise UnauthorizedError("the API key is not valid", invalid_token=True)
