"""Typed config fields that carry their own help text and bounds, and the one set of value checks.

A config dataclass declares each user-facing field with :func:`option`::

    m: int = option(128, help="Frozen token embeddings mixed per prompt token.", min=1)

and calls :func:`validate` in ``__post_init__``. The same metadata generates CLI flags (help
text, choices), so a field's documentation lives in one place. The checks
(:func:`check_int`, :func:`check_number`, :func:`check_bool`, :func:`check_choice`) are
what every config, spec and settings object in spp uses instead of inline copies; each takes
the error class to raise so that a message reaches the user as that package's error.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from spp.prompts.errors import SppError

_NO_DEFAULT = dataclasses.MISSING


def option(
    default: Any = _NO_DEFAULT,
    *,
    help: str,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[str] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with help text and bounds (checked by :func:`validate`).

    ``min``/``max`` bound ints and floats (inclusive); ``choices`` restricts strings; ``cli``
    False keeps a field out of generated command-line flags.
    """
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices else None, "cli": cli}
    return dataclasses.field(default=default, metadata=meta)


def field_help(f: dataclasses.Field) -> str:
    return str(f.metadata.get("help", ""))


def base_type(f: dataclasses.Field) -> tuple[str, bool]:
    """(``int``/``float``/``bool``/``str``/..., nullable) from a field's (string) annotation."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    parts = [p.strip() for p in annotation.split("|")]
    nullable = "None" in parts
    rest = [p for p in parts if p != "None"]
    return (rest[0] if len(rest) == 1 else annotation), nullable


def validate(obj: Any, error: type[SppError]) -> None:
    """Check every :func:`option` field of dataclass ``obj`` against its type and bounds."""
    for f in dataclasses.fields(obj):
        if "help" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        kind, nullable = base_type(f)
        if value is None and nullable:
            continue
        lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
        if kind == "int":
            check_int(f.name, value, error, minimum=lo, maximum=hi)
        elif kind == "float":
            check_number(f.name, value, error, minimum=lo, maximum=hi)
        elif kind == "bool":
            check_bool(f.name, value, error)
        elif kind == "str":
            if choices:
                check_choice(f.name, value, choices, error)
            elif not isinstance(value, str):
                raise error(f"{f.name} must be a string, got {value!r}")


def check_int(
    name: str, value: Any, error: type[SppError], *, minimum: float | None = 1, maximum: float | None = None
) -> int:
    """An int (never a bool) within [minimum, maximum]; the default asks for a positive integer."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return value
    raise error(f"{name} must be {_describe('an integer', minimum, maximum)}, got {value!r}")


def check_number(
    name: str,
    value: Any,
    error: type[SppError],
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """A finite int or float (never a bool) within [minimum, maximum] and > ``above``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        if above is None or value > above:
            return float(value)
    what = _describe("a number", minimum, maximum) if above is None else f"a number > {above:g}"
    raise error(f"{name} must be {what}, got {value!r}")


def check_bool(name: str, value: Any, error: type[SppError]) -> bool:
    if isinstance(value, bool):
        return value
    raise error(f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str], error: type[SppError]) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise error(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _describe(noun: str, minimum: float | None, maximum: float | None) -> str:
    if noun == "an integer" and minimum == 1 and maximum is None:
        return "a positive integer"
    if noun == "an integer" and minimum == 0 and maximum is None:
        return "a non-negative integer"
    if minimum is not None and maximum is not None:
        return f"{noun} in {minimum:g}..{maximum:g}"
    if minimum is not None:
        return f"{noun} >= {minimum:g}"
    if maximum is not None:
        return f"{noun} <= {maximum:g}"
    return noun


MAX_SHARDS = 256


def check_shards(shards: Any, error: type[SppError]) -> int | None:
    """A ``shards`` setting (spp.prompts.parallel; None: automatic), or ``error`` naming it."""
    return None if shards is None else check_int("shards", shards, error, maximum=MAX_SHARDS)
