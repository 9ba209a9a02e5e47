"""The one base class of every error spp reports to users as a single line (CLI exit 2, HTTP 4xx)."""


class SppError(ValueError):
    """A user-facing error: bad input, bad file, unknown name. Its message is the whole story."""
