"""Schema migrations (Alembic) on both databases: the shipped scripts build exactly the schema
the code declares, a 0.1.0 index is upgraded in place, and a shared index is only upgraded
by `spp registry migrate`."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from spp.registry import Registry
from spp.registry.database import SchemaError, _alembic_config, known_revisions
from spp.registry.schema import SCHEMA_HEAD, metadata

LEGACY = Path(__file__).parent / "data" / "legacy-0.1.0"
LEGACY_SHA = "5fc986a7a3ab43517646413a6097da6349a6ece917285ee090e19f289afccc35"


def _engine(reg: Registry):
    loc = reg.location
    return create_engine(loc.sqlalchemy_url() if loc.shared else f"sqlite:///{loc.root / 'index.sqlite'}")


def test_the_code_expects_the_scripts_head() -> None:
    assert known_revisions()[-1] == SCHEMA_HEAD


def test_migrated_schema_is_the_declared_schema(registry: Registry) -> None:
    """A new IndexedMeta field without its migration script fails here, on both backends."""
    registry.list()  # creates the schema through the migrations
    engine = _engine(registry)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert diffs == [] and revision == SCHEMA_HEAD
    assert len(registry.registry_id() or "") == 32


def test_a_0_1_0_index_is_stamped_and_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "legacy"
    (root / "blobs" / LEGACY_SHA[:2]).mkdir(parents=True)
    shutil.copy(LEGACY / f"{LEGACY_SHA}.safetensors", root / "blobs" / LEGACY_SHA[:2])
    with sqlite3.connect(root / "index.sqlite") as conn:
        conn.executescript((LEGACY / "index.sql").read_text())
    with Registry(root) as reg:
        assert reg.resolve("rte@prod").tags == {"team": "nlp"} and reg.verify() == []
        assert reg.registry_id() is not None
        assert reg.publish(reg.load("rte@1")[1], name="rte-copy")[0].ref == "rte-copy@1"
    with sqlite3.connect(root / "index.sqlite") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (SCHEMA_HEAD,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)


def _downgrade_to_baseline(reg: Registry) -> None:
    engine = _engine(reg)
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0001")
    engine.dispose()


def test_a_shared_index_is_upgraded_only_by_migrate(pg_registry_url: str, make_artifact) -> None:
    reg = Registry(pg_registry_url)
    reg.publish(make_artifact("rte", seed=1), aliases=["prod"])
    reg.close()
    _downgrade_to_baseline(reg)
    other = Registry(pg_registry_url)
    with pytest.raises(SchemaError, match=r"schema revision 0001, this spp needs 0002: run `spp registry migrate"):
        other.list()
    assert other.migrate() == ("0001", SCHEMA_HEAD)
    assert other.resolve("rte@prod").ref == "rte@1" and other.verify() == []
    assert other.migrate() == (SCHEMA_HEAD, SCHEMA_HEAD)  # idempotent
    other.close()


def test_an_index_from_a_newer_spp_is_refused(tmp_path: Path, make_artifact) -> None:
    reg = Registry(tmp_path / "r")
    reg.publish(make_artifact("rte", seed=1))
    reg.close()
    with sqlite3.connect(tmp_path / "r" / "index.sqlite") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="revision 9999, which this spp does not know"):
        Registry(tmp_path / "r").list()
