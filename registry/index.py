"""The SQLite index: versions, aliases and tags of every published prompt.

WAL mode lets readers (a server resolving ``rte@prod`` per request) run while a publish
writes. Every write is one ``BEGIN IMMEDIATE`` transaction: it takes the database's write
lock before reading, so two publishers can never both read "last version = 4" and both
write 5; the loser waits (busy_timeout) and then sees 5. ``names.last_version`` is a
counter that only grows, so a removed version number is never handed out again: ``rte@3``
means one content forever.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from spp.prompts.artifact.meta import ArtifactMeta, IndexedMeta, indexed_fields
from spp.registry.errors import NotFoundError, RegistryError
from spp.registry.refs import Ref

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000
_SHOW_MAX = 20  # how many known names/versions an error message lists

# The versions table: the registry's own columns around one column per indexed artifact
# field. The indexed fields are declared once, on spp.prompts.artifact.IndexedMeta; the
# CREATE TABLE, the column list, the publish row and Version are all derived from them.
_HEAD = (("name", "TEXT NOT NULL REFERENCES names(name)"), ("version", "INTEGER NOT NULL"), ("sha256", "TEXT NOT NULL"))
_TAIL = (
    ("main_metric", "REAL"),
    ("created_at", "TEXT NOT NULL"),
    ("deprecated", "INTEGER NOT NULL DEFAULT 0"),
    ("size", "INTEGER NOT NULL"),
)
_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER"}


def _indexed_columns() -> tuple[tuple[str, str], ...]:
    """(name, SQL type) of each IndexedMeta field; dict/list fields are stored as JSON text."""
    out = []
    for f in indexed_fields():
        annotation = str(f.type)
        nullable = "None" in annotation
        base = annotation.replace("| None", "").strip()
        sql = "TEXT" if base.startswith(("dict", "list")) else _SQL_TYPES[base]
        out.append((f.name, sql if nullable else f"{sql} NOT NULL"))
    return tuple(out)


_INDEXED = _indexed_columns()
_JSON_COLUMNS = frozenset(f.name for f in indexed_fields() if str(f.type).startswith(("dict", "list")))
_COLUMN_NAMES = tuple(name for name, _ in _HEAD + _INDEXED + _TAIL)
_COLUMNS = ", ".join(_COLUMN_NAMES)
_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS versions (\n    "
    + ",\n    ".join(f"{name} {sql}" for name, sql in _HEAD + _INDEXED + _TAIL)
    + ",\n    PRIMARY KEY (name, version),\n    UNIQUE (name, sha256)\n)"
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
{_VERSIONS_TABLE};
CREATE INDEX IF NOT EXISTS versions_sha256 ON versions (sha256);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE INDEX IF NOT EXISTS aliases_target ON aliases (name, version);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES versions (name, version) ON DELETE CASCADE
);
"""


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


def _row_to_version(row: Sequence[Any], aliases: Sequence[str], tags: Mapping[str, str]) -> Version:
    values = dict(zip(_COLUMN_NAMES, row))
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name])
    values["deprecated"] = bool(values["deprecated"])
    return Version(**values, aliases=tuple(sorted(aliases)), tags=dict(tags))


def publish_row(meta: ArtifactMeta, *, name: str, sha256: str, size: int, created_at: str) -> dict[str, Any]:
    """The index row of a new version of ``meta`` (everything but the version number)."""
    return dict(meta.indexed(), name=name, sha256=sha256, size=size, created_at=created_at, main_metric=meta.main_metric)


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOW_MAX])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOW_MAX else "") if items else "none"


class Index:
    """Thread- and process-safe access to ``index.sqlite`` (one connection per thread and pid)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    # ---------------------------------------------------------------- connections
    def conn(self) -> sqlite3.Connection:
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == os.getpid():
            return cached[1]
        conn = self._open()
        self._local.conn = (os.getpid(), conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry directory {self.path.parent}: {exc.strerror}") from None
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = FULL")  # a reported publish survives power loss
            conn.execute("PRAGMA foreign_keys = ON")
            _ensure_schema(conn)
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"cannot open registry index {self.path}: {exc}") from None
        return conn

    def close(self) -> None:
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == os.getpid():
            cached[1].close()
        self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database write lock from its first statement."""
        conn = self.conn()
        with _transaction(conn):
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several queries (WAL readers never block writers)."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # ---------------------------------------------------------------- lookups
    def find(self, conn: sqlite3.Connection, ref: Ref) -> Version:
        """Resolve ``ref`` inside an open transaction; NotFoundError lists what exists."""
        if ref.version is not None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM versions WHERE name = ? AND version = ?", (ref.name, ref.version)
            ).fetchone()
            if row is None:
                self._raise_missing_version(conn, ref)
        elif ref.alias is not None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM versions v WHERE (v.name, v.version) = "
                "(SELECT name, version FROM aliases WHERE name = ? AND alias = ?)",
                (ref.name, ref.alias),
            ).fetchone()
            if row is None:
                self._require_name(conn, ref.name)
                known = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE name = ? ORDER BY alias", (ref.name,))]
                raise NotFoundError(f"{ref.name} has no alias {ref.alias!r}; its aliases: {_listing(known)}")
        else:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM versions WHERE name = ? AND deprecated = 0 ORDER BY version DESC LIMIT 1",
                (ref.name,),
            ).fetchone()
            if row is None:
                self._require_name(conn, ref.name)
                last = conn.execute("SELECT MAX(version) FROM versions WHERE name = ?", (ref.name,)).fetchone()[0]
                raise NotFoundError(
                    f"every version of {ref.name} is deprecated; name one explicitly (e.g. {ref.name}@{last})"
                )
        return self._complete(conn, [row])[0]

    def _require_name(self, conn: sqlite3.Connection, name: str) -> None:
        if conn.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone() is None:
            known = [r[0] for r in conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]
            raise NotFoundError(f"no prompt named {name!r} in the registry; known names: {_listing(known)}")

    def _raise_missing_version(self, conn: sqlite3.Connection, ref: Ref) -> None:
        self._require_name(conn, ref.name)
        known = [r[0] for r in conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (ref.name,))]
        raise NotFoundError(f"{ref.name} has no version {ref.version}; its versions: {_listing(known)}")

    def _complete(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[Version]:
        """Attach aliases and tags to version rows (per row for a few, in bulk for many)."""
        if len(rows) <= 4:
            out = []
            for row in rows:
                key = (row[0], row[1])
                aliases = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE name = ? AND version = ?", key)]
                tags = dict(conn.execute("SELECT key, value FROM tags WHERE name = ? AND version = ? ORDER BY key", key))
                out.append(_row_to_version(row, aliases, tags))
            return out
        aliases: dict[tuple[str, int], list[str]] = {}
        for name, version, alias in conn.execute("SELECT name, version, alias FROM aliases"):
            aliases.setdefault((name, version), []).append(alias)
        tags: dict[tuple[str, int], dict[str, str]] = {}
        for name, version, key, value in conn.execute("SELECT name, version, key, value FROM tags ORDER BY key"):
            tags.setdefault((name, version), {})[key] = value
        return [_row_to_version(r, aliases.get((r[0], r[1]), ()), tags.get((r[0], r[1]), {})) for r in rows]

    def get(self, conn: sqlite3.Connection, name: str, version: int) -> Version:
        return self.find(conn, Ref(name, version=version))

    def search(
        self,
        *,
        name: str | None = None,
        task: str | None = None,
        method: str | None = None,
        backbone: str | None = None,
        tags: Mapping[str, str] | None = None,
        include_deprecated: bool = True,
    ) -> list[Version]:
        where, args = [], []
        for column, value in (("name", name), ("task", task), ("method", method), ("backbone", backbone)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if not include_deprecated:
            where.append("deprecated = 0")
        for key, value in (tags or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version = v.version "
                "AND t.key = ? AND t.value = ?)"
            )
            args += [key, value]
        sql = f"SELECT {_COLUMNS} FROM versions v"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.read() as conn:
            rows = conn.execute(sql + " ORDER BY name, version", args).fetchall()
            return self._complete(conn, rows)

    def names(self) -> list[str]:
        return [r[0] for r in self.conn().execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def blob_refs(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM versions")}

    # ---------------------------------------------------------------- writes
    def insert(self, conn: sqlite3.Connection, row: Mapping[str, Any]) -> tuple[int, bool]:
        """(version, created) for ``row`` under its name; identical content keeps its version."""
        found = conn.execute(
            "SELECT version FROM versions WHERE name = ? AND sha256 = ?", (row["name"], row["sha256"])
        ).fetchone()
        if found is not None:
            return found[0], False
        version = conn.execute(
            "INSERT INTO names (name, last_version) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET last_version = last_version + 1 RETURNING last_version",
            (row["name"],),
        ).fetchone()[0]
        values = dict(row, version=version, deprecated=0)
        for name in _JSON_COLUMNS:
            values[name] = json.dumps(values[name], sort_keys=True)
        conn.execute(
            f"INSERT INTO versions ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMN_NAMES))})",
            [values[c] for c in _COLUMN_NAMES],
        )
        return version, True

    def set_alias(self, conn: sqlite3.Connection, name: str, alias: str, version: int) -> None:
        # One UPSERT: readers see the old target or the new one, never neither.
        conn.execute(
            "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
            "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
            (name, alias, version),
        )

    def remove_alias(self, conn: sqlite3.Connection, name: str, alias: str) -> None:
        if conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)).rowcount == 0:
            self._require_name(conn, name)
            known = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE name = ? ORDER BY alias", (name,))]
            raise NotFoundError(f"{name} has no alias {alias!r}; its aliases: {_listing(known)}")

    def set_tags(self, conn: sqlite3.Connection, name: str, version: int, tags: Mapping[str, str]) -> None:
        """Upsert tags; an empty value removes the key."""
        for key, value in tags.items():
            if value == "":
                conn.execute("DELETE FROM tags WHERE name = ? AND version = ? AND key = ?", (name, version, key))
            else:
                conn.execute(
                    "INSERT INTO tags (name, version, key, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
                    (name, version, key, value),
                )

    def set_deprecated(self, conn: sqlite3.Connection, name: str, version: int, deprecated: bool) -> None:
        conn.execute("UPDATE versions SET deprecated = ? WHERE name = ? AND version = ?", (int(deprecated), name, version))

    def delete(self, conn: sqlite3.Connection, name: str, version: int) -> None:
        conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, version))
        conn.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, version))  # tags cascade


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    try:
        _retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
    except sqlite3.OperationalError as exc:
        raise RegistryError(
            f"registry index is busy: another process has held its write lock for over {BUSY_TIMEOUT_MS // 1000} s ({exc})"
        ) from None
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables once; later opens only read the schema version (no write lock)."""
    try:
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:  # no meta table yet: a fresh registry
        found = None
    if found is None:
        with _transaction(conn):
            _create_schema(conn)
    elif int(found[0]) > SCHEMA_VERSION:
        _newer_schema(found[0])


def _newer_schema(found: str) -> None:
    raise RegistryError(
        f"registry index has schema version {found}, newer than this spp understands ({SCHEMA_VERSION}); upgrade spp"
    )


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if found is None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(found[0]) > SCHEMA_VERSION:
        _newer_schema(found[0])


def _retry_locked(fn, attempts: int = 5):
    """SQLite can report 'locked' without calling the busy handler (e.g. while another connection
    switches the file to WAL); retry a few times on top of busy_timeout."""
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.02 * (i + 1))
