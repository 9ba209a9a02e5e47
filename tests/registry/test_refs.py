"""Reference parsing and the name / alias / tag rules."""

from __future__ import annotations

import pytest

from spp.registry import Ref, RegistryError, check_alias, check_name, parse_ref, parse_tags
from spp.registry.refs import MAX_VERSION, check_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rte", Ref("rte")),
        ("rte@latest", Ref("rte")),
        ("rte@3", Ref("rte", version=3)),
        ("rte@prod", Ref("rte", alias="prod")),
        ("  sst2@v2-rc  ", Ref("sst2", alias="v2-rc")),
        ("my.task_1+x@12", Ref("my.task_1+x", version=12)),
        ("rte@007", Ref("rte", version=7)),
        (f"rte@{MAX_VERSION}", Ref("rte", version=2**63 - 1)),
    ],
)
def test_parse_ref(text: str, expected: Ref) -> None:
    assert parse_ref(text) == expected
    assert parse_ref(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "empty"), ("rte@", "ends with '@'"), ("rte@1@2", "more than one"), ("rte@0", "start at 1"),
     ("a/b@1", "path separators"), ("../x", "path separators"), ("..x", "'..'"),
     # only ASCII digits are versions: Arabic-Indic, fullwidth and superscript digits are not
     ("sentiment@\u0661", "ASCII digits"), ("sentiment@\uff11", "ASCII digits"), ("sentiment@\u00b2", "ASCII digits"),
     ("sentiment@99999999999999999999", "at most 9223372036854775807"), (f"rte@{2**63}", "at most"),
     ("rte@" + "9" * 5000, "at most"), ("rte@00", "start at 1")],
)
def test_parse_ref_rejects(text: str, fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment.replace("(", r"\(")):
        parse_ref(text)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("a/b", "path separators"), ("a\\b", "path separators"), ("a..b", "'..'"), ("..", "'..'"),
     ("rte@1", "'@'"), ("has space", "invalid"), ("-lead", "invalid"), ("x" * 129, "invalid"), ("", "non-empty")],
)
def test_bad_names(name: str, fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment) as info:
        check_name(name)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("alias", ["latest", "3", "007"])
def test_reserved_aliases(alias: str) -> None:
    with pytest.raises(RegistryError, match="reserved|version number"):
        check_alias(alias)


def test_parse_tags() -> None:
    assert parse_tags(["team=nlp", "stage = prod", "empty="]) == {"team": "nlp", "stage": "prod", "empty": ""}
    for bad in (["novalue"], ["=x"], ["bad key=1"], ["k=" + "v" * 300]):
        with pytest.raises(RegistryError):
            parse_tags(bad)


def test_check_version_bounds() -> None:
    assert check_version("12") == 12 and check_version(MAX_VERSION) == MAX_VERSION
    assert check_version("0" * 30 + "5") == 5  # leading zeros do not count against the bound
    for bad in ("", "-1", "1.0", "\u0661", 0, MAX_VERSION + 1, True, 1.0):
        with pytest.raises(RegistryError):
            check_version(bad)  # type: ignore[arg-type]
