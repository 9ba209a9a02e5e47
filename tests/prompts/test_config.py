"""The shared config helpers: option() metadata and the one set of value checks."""

from __future__ import annotations

import dataclasses
import math

import pytest

from spp.prompts.config import base_type, check_bool, check_choice, check_int, check_number, field_help, option, validate
from spp.prompts.errors import ConfigError, SppError
from spp.prompts.methods import get_method, method_names


class _Err(SppError):
    pass


@dataclasses.dataclass
class _Cfg:
    n: int = option(3, help="how many", min=1, max=5)
    rate: float | None = option(None, help="a rate", min=0.0)
    flag: bool = option(False, help="a switch")
    kind: str = option("a", help="a kind", choices=("a", "b"))
    plain: int = 0  # not an option: never checked

    def __post_init__(self) -> None:
        validate(self, _Err)


def test_option_carries_help_and_bounds() -> None:
    fields = {f.name: f for f in dataclasses.fields(_Cfg)}
    assert field_help(fields["n"]) == "how many" and fields["kind"].metadata["choices"] == ("a", "b")
    assert base_type(fields["rate"]) == ("float", True) and base_type(fields["n"]) == ("int", False)
    assert _Cfg().n == 3 and _Cfg(rate=None).rate is None and _Cfg(plain=-7).plain == -7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be an integer in 1..5, got 0"),
        ({"n": 6}, "n must be an integer in 1..5, got 6"),
        ({"n": True}, "n must be an integer in 1..5, got True"),
        ({"n": "3"}, "n must be an integer in 1..5, got '3'"),
        ({"rate": -1.0}, "rate must be a number >= 0, got -1.0"),
        ({"rate": math.nan}, "rate must be a number >= 0"),
        ({"flag": 1}, "flag must be true or false, got 1"),
        ({"kind": "c"}, "kind must be one of a, b; got 'c'"),
    ],
)
def test_validate_names_the_field_and_the_rule(kwargs, message) -> None:
    with pytest.raises(_Err) as info:
        _Cfg(**kwargs)
    assert str(info.value).startswith(message)


def test_checks_return_the_value_and_raise_the_given_class() -> None:
    assert check_int("x", 5, ConfigError) == 5 and check_int("x", 0, ConfigError, minimum=0) == 0
    assert check_number("y", 2, ConfigError, above=0) == 2.0 and check_bool("z", True, ConfigError) is True
    assert check_choice("c", "b", ("a", "b"), ConfigError) == "b"
    with pytest.raises(ConfigError, match="x must be a positive integer"):
        check_int("x", -1, ConfigError)
    with pytest.raises(ConfigError, match="x must be a non-negative integer"):
        check_int("x", -1, ConfigError, minimum=0)
    with pytest.raises(ConfigError, match="y must be a number > 0"):
        check_number("y", 0, ConfigError, above=0)


@pytest.mark.parametrize("name", method_names())
def test_every_method_config_field_carries_help(name: str) -> None:
    for f in dataclasses.fields(get_method(name).config_cls):
        assert field_help(f), f"{name}.{f.name} has no help text"
