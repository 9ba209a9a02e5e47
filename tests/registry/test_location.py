"""One registry location string: a directory or postgresql://...?store=..., anything else refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from spp.registry import LocationError, Registry, mask, parse_location


def test_a_plain_path_is_a_directory_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_location(str(tmp_path / "r")).root == tmp_path / "r"
    assert parse_location(tmp_path / "r").root == tmp_path / "r"
    assert parse_location("relative/dir").root == Path("relative/dir")
    monkeypatch.setenv("SPP_REGISTRY", str(tmp_path / "from-env"))
    monkeypatch.setenv("SPP_HOME", str(tmp_path / "home"))
    assert parse_location(None).root == tmp_path / "from-env"  # $SPP_REGISTRY wins over $SPP_HOME
    monkeypatch.delenv("SPP_REGISTRY")
    assert parse_location(None).root == tmp_path / "home"


def test_a_postgresql_url_names_its_database_and_store() -> None:
    loc = parse_location("postgresql://spp@db.internal:5433/prompts?store=s3://bucket/prefix&sslmode=require")
    assert loc.shared and loc.root is None
    assert loc.store == "s3://bucket/prefix"
    assert loc.db_url == "postgresql://spp@db.internal:5433/prompts?sslmode=require"
    assert loc.sqlalchemy_url().startswith("postgresql+psycopg://spp@db.internal:5433/prompts?")
    assert "connect_timeout=3" in loc.sqlalchemy_url()


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("mysql://u@h/db", "unsupported registry location mysql://u@h/db"),
        ("s3://bucket/prompts", "unsupported registry location"),
        ("postgresql://u@h/db", "needs exactly one ?store=STORE_URL"),
        ("postgresql://u@h/db?store=ftp://x/y", "unsupported blob store ftp://x/y"),
        ("postgresql://u@h/db?store=file://relative", "absolute path"),
        ("postgresql://u@h?store=file:///x", "needs a host and a database"),
        ("", "must be a directory or a postgresql:// URL"),
    ],
)
def test_bad_locations_are_refused_in_one_line(value: str, fragment: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LocationError) as info:
        Registry(value)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no directory named "mysql:" or "postgresql:" appeared


def test_passwords_are_masked_everywhere() -> None:
    url = "postgresql://spp:hunter2@db/prompts?store=file:///srv/p"
    loc = parse_location(url)
    assert "hunter2" not in loc.display and "hunter2" not in repr(loc) and "spp:***@db" in loc.display
    assert mask("x postgresql://a:b@c/d y") == "x postgresql://a:***@c/d y"
    with pytest.raises(LocationError) as info:
        parse_location("postgresql://spp:hunter2@db/prompts")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(Registry(url))


def test_a_missing_directory_is_refused_when_it_must_exist(tmp_path: Path) -> None:
    with pytest.raises(LocationError.__mro__[1], match="does not exist"):
        Registry(tmp_path / "typo", must_exist=True)
    assert not (tmp_path / "typo").exists()
