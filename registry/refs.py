"""References (``rte``, ``rte@3``, ``rte@prod``, ``rte@latest``) and the rules for names,
aliases and tags.

A name becomes part of user-facing references and of Hub repo metadata, so it is kept to a
portable character set: no path separators, no ``..``, no ``@`` (the reference separator),
no whitespace. Aliases follow the same rules and may not look like a version number or be
``latest``, so ``rte@3`` and ``rte@latest`` can never be ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from spp.registry.errors import RegistryError

LATEST = "latest"
# Versions are stored as SQLite INTEGERs (signed 64-bit); a larger number can name no version.
MAX_VERSION = 2**63 - 1
_VERSION_RE = re.compile(r"[0-9]+", re.ASCII)  # "١" and "１" are digits to str.isdigit, not versions
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
_TAG_VALUE_MAX = 256


@dataclass(frozen=True)
class Ref:
    """A parsed reference. ``version`` and ``alias`` are both None for the latest version."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_name(name: str, *, what: str = "name", error: type[RegistryError] = RegistryError) -> str:
    """Return ``name`` if it is a valid prompt name, else raise ``error`` saying why."""
    if not isinstance(name, str) or not name:
        raise error(f"{what} must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name:
        raise error(f"{what} {name!r} must not contain path separators ('/' or '\\')")
    if ".." in name:
        raise error(f"{what} {name!r} must not contain '..'")
    if "@" in name:
        raise error(f"{what} {name!r} must not contain '@' (it separates name and version: rte@3)")
    if not _NAME_RE.fullmatch(name):
        raise error(
            f"{what} {name!r} is invalid: use 1-128 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str, *, error: type[RegistryError] = RegistryError) -> str:
    """Aliases are names that are neither a version number nor ``latest``."""
    check_name(alias, what="alias", error=error)
    if _VERSION_RE.fullmatch(alias):
        raise error(f"alias {alias!r} looks like a version number; aliases must contain a non-digit")
    if alias == LATEST:
        raise error(f"alias {LATEST!r} is reserved: it always means the newest version")
    return alias


def check_tags(tags: Mapping[str, str], *, error: type[RegistryError] = RegistryError) -> dict[str, str]:
    """Validate tag keys and values; returns a plain dict copy."""
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
            raise error(f"tag key {key!r} is invalid: use 1-64 letters, digits, '_', '.', ':' or '-'")
        if not isinstance(value, str):
            raise error(f"tag {key!r} must have a string value, got {type(value).__name__}")
        if len(value) > _TAG_VALUE_MAX or any(c in value for c in "\r\n\0"):
            raise error(f"tag {key}={value[:40]!r}: values are one line of at most {_TAG_VALUE_MAX} characters")
        out[key] = value
    return out


def parse_tags(items: Iterable[str], *, error: type[RegistryError] = RegistryError) -> dict[str, str]:
    """``["k=v", "team=nlp"]`` -> ``{"k": "v", "team": "nlp"}`` (command-line form)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise error(f"tag {item!r} must be written key=value")
        out[key.strip()] = value.strip()
    return check_tags(out, error=error)


def parse_ref(ref: str) -> Ref:
    """``rte`` -> latest; ``rte@3`` -> version 3; ``rte@prod`` -> alias; ``rte@latest`` -> latest."""
    if not isinstance(ref, str) or not ref.strip():
        raise RegistryError(f"empty prompt reference {ref!r}; expected NAME, NAME@VERSION or NAME@ALIAS")
    name, sep, selector = ref.strip().partition("@")
    if sep and not selector:
        raise RegistryError(f"reference {ref!r} ends with '@'; expected NAME@VERSION or NAME@ALIAS")
    if "@" in selector:
        raise RegistryError(f"reference {ref!r} has more than one '@'")
    check_name(name)
    if not sep or selector == LATEST:
        return Ref(name)
    if _VERSION_RE.fullmatch(selector):
        return Ref(name, version=check_version(selector, ref=ref))
    if selector.isdigit():  # digits, but not ASCII ones: "١", "１", "²"
        raise RegistryError(f"reference {ref!r}: versions are written with the ASCII digits 0-9")
    return Ref(name, alias=check_alias(selector))


def check_version(value: str | int, *, ref: str | None = None) -> int:
    """A version number from text of ASCII digits (or an int): 1..MAX_VERSION, else RegistryError."""
    where = f"reference {ref!r}" if ref is not None else f"version {value!r}"
    if isinstance(value, str):
        if not _VERSION_RE.fullmatch(value):
            raise RegistryError(f"{where}: versions are written with the ASCII digits 0-9")
        if len(value.lstrip("0")) > len(str(MAX_VERSION)):  # before int(): no huge conversions
            raise RegistryError(f"{where}: versions are at most {MAX_VERSION}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistryError(f"{where}: a version is an integer, got {type(value).__name__}")
    if value < 1:
        raise RegistryError(f"{where}: versions start at 1")
    if value > MAX_VERSION:
        raise RegistryError(f"{where}: versions are at most {MAX_VERSION}")
    return value
