"""The base of every error spp reports to users as a single line (CLI exit 2, HTTP 4xx).

Every package derives its own errors from :class:`SppError` (``TaskError``, ``ArtifactError``,
``RegistryError``, the server's ``ServeError``...), so the CLI and the server each catch one
class. :class:`ConfigError` is here because configs of every package raise it.
"""


class SppError(ValueError):
    """A user-facing error: bad input, bad file, unknown name. Its message is the whole story."""


class ConfigError(SppError):
    """A configuration value is unknown or invalid; the message names the field."""
