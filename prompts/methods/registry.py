"""The one name -> method registry: ``spp methods``, ``--method`` and artifact loading all
resolve method names here, and nothing else branches on them."""

from __future__ import annotations

from typing import Any

from spp.prompts.methods.base import ConfigError, InitContext, PromptMethod


METHODS: dict[str, type[PromptMethod]] = {}


def register(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    _ensure_loaded()
    return sorted(METHODS)


def get_method(name: str) -> type[PromptMethod]:
    _ensure_loaded()
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}") from None


def build_method(name: str, options: dict[str, Any], ctx: InitContext) -> PromptMethod:
    """Instantiate method ``name`` with config ``options`` (unknown keys raise)."""
    cls = get_method(name)
    return cls(cls.config_cls.from_dict(options), ctx)


def _ensure_loaded() -> None:
    # Importing the method modules fills METHODS (each registers itself with @register);
    # done on first lookup so that importing this module stays cheap and free of cycles.
    # A new method module needs one line here.
    from spp.prompts.methods import attempt, ept, ptuning, residual, simple, superpos  # noqa: F401
