"""Errors the server reports; the app answers each with one HTTP status and a JSON body.

Every class derives from SppError (one-line message). This module imports no web framework
(the batcher raises these too); the class -> status table is ``ERROR_STATUSES`` in
:mod:`spp.serve.app`: UnknownTaskError 404, PromptUnavailableError 409,
RequestTooLargeError 413, InvalidRequestError 422, QueueFullError and ServerBusyError 503
(with Retry-After), ScoringError 422, or 503 when transient.
"""

from __future__ import annotations

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
