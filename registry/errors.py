"""Registry errors: each is one line that names the reference or file it is about."""

from __future__ import annotations

from spp.prompts.errors import SppError


class RegistryError(SppError):
    """Base of every registry error (bad reference, bad name, unusable registry directory)."""


class NotFoundError(RegistryError):
    """A name, version or alias does not exist; the message lists what does."""


class IntegrityError(RegistryError):
    """A stored blob is missing, truncated or does not hash to its recorded sha256."""


class PublishError(RegistryError):
    """An artifact was refused at publish time (invalid file, metadata, values or name)."""


class UnavailableError(RegistryError):
    """The index database cannot be reached or refused us (server down, wrong credentials).

    Transient from a client's point of view: the server answers 503, never 500 or 404."""
