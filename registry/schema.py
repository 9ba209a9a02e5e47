"""The index schema, declared once in SQLAlchemy Core and shared by SQLite and PostgreSQL.

The ``versions`` table is the registry's own columns around one column per field of
:class:`~spp.prompts.artifact.IndexedMeta` (dict/list fields as JSON text), so the table, the
publish row and :class:`Version` are all derived from that one dataclass. The Alembic
migrations in ``migrations/versions`` are frozen snapshots of this schema; a test compares
the migrated database against :data:`metadata` so a new indexed field cannot ship without
its migration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from sqlalchemy import (
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

from spp.prompts.artifact.meta import ArtifactMeta, IndexedMeta, indexed_fields

# The Alembic revision this code expects (a test checks it is the scripts' head).
SCHEMA_HEAD = "0002"
# meta.schema_version, which spp 0.1.0 checks before use: the tables are still those it knows.
SCHEMA_VERSION = 1

_TYPES = {"str": Text, "int": Integer, "float": Float, "bool": Integer}

metadata = MetaData()


def _indexed_columns() -> list[Column]:
    """One column per IndexedMeta field; ``X | None`` is nullable, dict/list are JSON text."""
    out = []
    for f in indexed_fields():
        annotation = str(f.type)
        base = annotation.replace("| None", "").strip()
        sql = Text if base.startswith(("dict", "list")) else _TYPES[base]
        out.append(Column(f.name, sql, nullable="None" in annotation))
    return out


meta_table = Table("meta", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))
names_table = Table(
    "names", metadata, Column("name", Text, primary_key=True), Column("last_version", Integer, nullable=False)
)
versions_table = Table(
    "versions",
    metadata,
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", Text, nullable=False),
    *_indexed_columns(),
    Column("main_metric", Float, nullable=True),
    Column("created_at", Text, nullable=False),
    Column("deprecated", Integer, nullable=False, server_default="0"),
    Column("size", Integer, nullable=False),
    PrimaryKeyConstraint("name", "version"),
    UniqueConstraint("name", "sha256"),
    ForeignKeyConstraint(["name"], ["names.name"]),
)
Index("versions_sha256", versions_table.c.sha256)
aliases_table = Table(
    "aliases",
    metadata,
    Column("name", Text, nullable=False),
    Column("alias", Text, nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("name", "alias"),
    ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"]),
)
Index("aliases_target", aliases_table.c.name, aliases_table.c.version)
tags_table = Table(
    "tags",
    metadata,
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("name", "version", "key"),
    ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"], ondelete="CASCADE"),
)

VERSION_COLUMNS = tuple(c.name for c in versions_table.columns)
_JSON_COLUMNS = frozenset(f.name for f in indexed_fields() if str(f.type).startswith(("dict", "list")))


@dataclass(kw_only=True)
class Version(IndexedMeta):
    """One immutable published version, as the index records it: the artifact's indexed
    metadata (:class:`~spp.prompts.artifact.IndexedMeta`) plus the registry's own fields."""

    name: str
    version: int
    sha256: str
    size: int = 0
    main_metric: float | None = None
    created_at: str = ""
    deprecated: bool = False
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict fields are not hashable; identity is (name, version, content)
        return hash((self.name, self.version, self.sha256))

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (CLI ``--json``, server responses)."""
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        out["ref"] = self.ref
        return out


def row_to_version(row: Sequence[Any], aliases: Sequence[str], tags: Mapping[str, str]) -> Version:
    values = dict(zip(VERSION_COLUMNS, row))
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name])
    values["deprecated"] = bool(values["deprecated"])
    return Version(**values, aliases=tuple(sorted(aliases)), tags=dict(tags))


def version_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """The column values of a version (JSON fields encoded, deprecated as 0/1)."""
    row = {c: values[c] for c in VERSION_COLUMNS}
    for name in _JSON_COLUMNS:
        row[name] = json.dumps(row[name], sort_keys=True)
    row["deprecated"] = int(bool(row["deprecated"]))
    return row


def publish_row(meta: ArtifactMeta, *, name: str, sha256: str, size: int, created_at: str) -> dict[str, Any]:
    """The index row of a new version of ``meta`` (everything but the version number)."""
    return dict(meta.indexed(), name=name, sha256=sha256, size=size, created_at=created_at, main_metric=meta.main_metric)
