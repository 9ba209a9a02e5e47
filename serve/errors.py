"""Errors the server reports; the app answers each with one HTTP status and a JSON body.

Every class derives from SppError (one-line message). This module imports no web framework
(the batcher raises these too); the class -> status table is ``ERROR_STATUSES`` in
:mod:`spp.serve.app`: UnauthorizedError 401, UnknownTaskError 404, BodyTimeoutError 408,
PromptUnavailableError 409, RequestTooLargeError 413, UnsupportedMediaTypeError 415,
InvalidRequestError 422, ClientDisconnectedError 499, QueueFullError and ServerBusyError 503
(with Retry-After), ScoringError 422, or 503 when transient. An error's ``headers`` attribute,
where it has one, is sent with the answer.
"""

from __future__ import annotations

import re
from typing import Sequence

from spp.prompts.errors import SppError


class ServeError(SppError):
    """Base of the server's own errors."""


class InvalidRequestError(ServeError):
    """The request is well-formed JSON but not a valid prediction request (HTTP 422)."""


class UnknownTaskError(ServeError):
    """The reference names no prompt in the registry (HTTP 404); ``known`` lists the names."""

    def __init__(self, message: str, known: Sequence[str]) -> None:
        super().__init__(message)
        self.known = list(known)


class RequestTooLargeError(ServeError):
    """Too many inputs in one request, or one input too long (HTTP 413)."""


class PromptUnavailableError(ServeError):
    """The prompt exists in the registry but this server cannot use it (HTTP 409).

    A corrupt blob (checksum mismatch), a prompt trained on another backbone (fingerprint or
    d_model), or an artifact without a usable task spec. Only that prompt's requests fail.
    """

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"prompt {ref} cannot be served: {reason}")
        self.ref = ref
        self.reason = reason


class QueueFullError(ServeError):
    """The batch queue holds too many rows; the client should retry later (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServerBusyError(ServeError):
    """The batcher is not running (starting up or shutting down) (HTTP 503)."""


class ScoringError(ServeError):
    """Scoring this request failed on its own (other requests of the batch were answered).

    ``transient`` errors (RuntimeError: out of memory, device errors) answer 503; errors
    caused by the input itself answer 422.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class UnauthorizedError(ServeError):
    """No API key, or not a known one (HTTP 401 with ``WWW-Authenticate: Bearer``).

    The message never repeats the presented token.
    """

    def __init__(self, message: str, *, invalid_token: bool) -> None:
        super().__init__(message)
        # RFC 6750: a missing token gets the bare challenge, a rejected one says invalid_token
        challenge = 'Bearer realm="spp"' + (', error="invalid_token"' if invalid_token else "")
        self.headers = {"WWW-Authenticate": challenge}


class UnsupportedMediaTypeError(ServeError):
    """The body is not declared as UTF-8 JSON (HTTP 415)."""


class BodyTimeoutError(ServeError):
    """The request body did not arrive in time, e.g. a body that is not chunk-encoded sent as
    ``Transfer-Encoding: chunked`` (HTTP 408; the connection is closed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Connection": "close"}


class ClientDisconnectedError(ServeError):
    """The client went away before its body arrived; nobody reads the answer (499, as nginx
    logs it), and it is not a server error."""


# An absolute POSIX path of two or more components, not inside a URL ("http://h/a/b").
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"`(),;]+/)+([^\s/'\"`(),;]*)")


def redact_paths(text: str) -> str:
    """``text`` with every absolute filesystem path cut to its last component (``…/name``).

    Error bodies and /tasks go to any client; where the registry lives on disk is not theirs
    to know. The server log keeps the full message.
    """
    return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(1), text)
