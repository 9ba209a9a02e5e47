"""The index: versions, aliases and tags of every published prompt, on SQLite or PostgreSQL.

One SQLAlchemy Core implementation serves both databases (the tables: :mod:`.schema`; engines
and migrations: :mod:`.database`). Every write is one transaction that takes the name's
counter row first (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` holds the whole
file on SQLite), so two publishers can never both read "last version = 4" and both write 5:
the second waits, then sees 5. ``names.last_version`` only grows, so a removed version number
is never handed out again: ``rte@3`` means one content forever. A transaction that loses a
race anyway (a unique-key conflict, a PostgreSQL deadlock or serialization failure) is rolled
back whole and retried, so a conflict never leaves a gap.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from sqlalchemy import Connection, and_, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from spp.registry.database import WRITE, make_engine, open_engine, unavailable, upgrade
from spp.registry.errors import NotFoundError, RegistryError
from spp.registry.location import Location
from spp.registry.refs import Ref
from spp.registry.schema import (
    Version,
    aliases_table as A,
    meta_table,
    names_table as N,
    publish_row,
    row_to_version,
    tags_table as T,
    version_row,
    versions_table as V,
)

__all__ = ["Index", "Version", "publish_row"]

log = logging.getLogger(__name__)
R = TypeVar("R")
_SHOW_MAX = 20  # how many known names/versions an error message lists
_RETRIES = 8
_RETRY_PGCODES = {"40001", "40P01"}  # serialization failure, deadlock detected
_BLOB_LOCK = 0x5370_7042  # PostgreSQL advisory lock id ("SppB") between publish and gc


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOW_MAX])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOW_MAX else "") if items else "none"


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None)
    return code in _RETRY_PGCODES or "locked" in str(exc.orig)


class Index:
    """Process- and thread-safe access to one registry's index (a pooled engine per process)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._engine = None
        self._pid = os.getpid()

    @property
    def engine(self):
        if self._engine is not None and self._pid != os.getpid():
            self._engine.dispose(close=False)  # a pool inherited through fork: never reuse its sockets
            self._engine = None
        if self._engine is None:
            self._engine = open_engine(self.location)
            self._pid = os.getpid()
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> tuple[str | None, str]:
        """Upgrade the schema to this spp's head revision; (revision before, revision after)."""
        engine = make_engine(self.location)
        try:
            return upgrade(engine, self.location.display)
        except DBAPIError as exc:
            raise self._error(exc) from None
        finally:
            engine.dispose()

    def lock_blobs(self, conn: Connection, *, exclusive: bool) -> None:
        """Publishers (shared) and gc/rm (exclusive) exclude each other, so gc can never delete
        a blob that a publish is about to index. SQLite's write lock already does this."""
        if self.dialect == "postgresql":
            fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            conn.execute(select(getattr(func, fn)(_BLOB_LOCK)))

    def counters(self) -> dict[str, int]:
        """name -> the highest version number ever allocated (removed ones included)."""
        with self.read() as conn:
            return dict(conn.execute(select(N.c.name, N.c.last_version)).all())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # ---------------------------------------------------------------- transactions
    @contextmanager
    def _connect(self, *, raw: bool = False, **options: Any) -> Iterator[Connection]:
        """A connection in a transaction; driver errors become one-line RegistryErrors unless
        ``raw`` (the retry loop needs them) or a conflict (IntegrityError, for ``write``)."""
        try:
            with self.engine.connect().execution_options(**options) as conn, conn.begin():
                yield conn
        except DBAPIError as exc:
            if raw or isinstance(exc, IntegrityError):
                raise
            raise self._error(exc) from None
        except SQLAlchemyError as exc:  # e.g. no pooled connection came free in time
            raise self._error(exc) from None

    def _error(self, exc: SQLAlchemyError) -> RegistryError:
        if self.location.shared:
            return unavailable(self.location.display, exc)
        reason = str(getattr(exc, "orig", None) or exc)
        if "locked" in reason:
            return RegistryError(f"registry index {self.location.display} is busy: another process holds its write lock")
        return RegistryError(f"registry index {self.location.display}: {' '.join(reason.split())}")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: holding the write lock from its first statement)."""
        try:
            with self._connect(**WRITE) as conn:
                yield conn
        except IntegrityError as exc:
            raise self._error(exc) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction (WAL readers never block writers; PostgreSQL's MVCC likewise)."""
        with self._connect() as conn:
            yield conn

    def transact(self, fn: Callable[[Connection], R]) -> R:
        """Run ``fn`` in one write transaction; retried whole when it loses a race."""
        for attempt in range(_RETRIES):
            try:
                with self._connect(raw=True, **WRITE) as conn:
                    return fn(conn)
            except DBAPIError as exc:
                if not _retryable(exc) or attempt == _RETRIES - 1:
                    raise self._error(exc) from None
                log.info("index transaction conflicted (%s); retrying", type(exc.orig).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _upsert(self):
        return pg_insert if self.dialect == "postgresql" else sqlite_insert

    # ---------------------------------------------------------------- lookups
    def find(self, conn: Connection, ref: Ref, *, details: bool = True) -> Version:
        """Resolve ``ref`` inside an open transaction; NotFoundError lists what exists. Without
        ``details`` the Version's aliases and tags are left empty (one query instead of three)."""
        if ref.version is not None:
            row = conn.execute(select(V).where(V.c.name == ref.name, V.c.version == ref.version)).first()
            if row is None:
                self._require_name(conn, ref.name)
                known = conn.execute(select(V.c.version).where(V.c.name == ref.name).order_by(V.c.version)).scalars()
                raise NotFoundError(f"{ref.name} has no version {ref.version}; its versions: {_listing(list(known))}")
        elif ref.alias is not None:
            row = conn.execute(
                select(V).join(A, and_(A.c.name == V.c.name, A.c.version == V.c.version))
                .where(A.c.name == ref.name, A.c.alias == ref.alias)
            ).first()
            if row is None:
                self._require_name(conn, ref.name)
                raise NotFoundError(f"{ref.name} has no alias {ref.alias!r}; its aliases: {_listing(self._aliases(conn, ref.name))}")
        else:
            row = conn.execute(
                select(V).where(V.c.name == ref.name, V.c.deprecated == 0).order_by(V.c.version.desc()).limit(1)
            ).first()
            if row is None:
                self._require_name(conn, ref.name)
                last = conn.execute(select(func.max(V.c.version)).where(V.c.name == ref.name)).scalar()
                raise NotFoundError(
                    f"every version of {ref.name} is deprecated; name one explicitly (e.g. {ref.name}@{last})"
                )
        return self._complete(conn, [row])[0] if details else row_to_version(row, (), {})

    def _aliases(self, conn: Connection, name: str) -> list[str]:
        return list(conn.execute(select(A.c.alias).where(A.c.name == name).order_by(A.c.alias)).scalars())

    def _require_name(self, conn: Connection, name: str) -> None:
        if conn.execute(select(V.c.name).where(V.c.name == name).limit(1)).first() is None:
            known = list(conn.execute(select(V.c.name).distinct().order_by(V.c.name)).scalars())
            raise NotFoundError(f"no prompt named {name!r} in the registry; known names: {_listing(known)}")

    def _complete(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> list[Version]:
        """Attach aliases and tags to version rows (per row for a few, in bulk for many)."""
        if len(rows) <= 4:
            out = []
            for row in rows:
                key_a = and_(A.c.name == row[0], A.c.version == row[1])
                key_t = and_(T.c.name == row[0], T.c.version == row[1])
                aliases = list(conn.execute(select(A.c.alias).where(key_a)).scalars())
                tags = dict(conn.execute(select(T.c.key, T.c.value).where(key_t).order_by(T.c.key)).all())
                out.append(row_to_version(row, aliases, tags))
            return out
        aliases: dict[tuple[str, int], list[str]] = {}
        for name, version, alias in conn.execute(select(A.c.name, A.c.version, A.c.alias)):
            aliases.setdefault((name, version), []).append(alias)
        tags: dict[tuple[str, int], dict[str, str]] = {}
        for name, version, key, value in conn.execute(select(T.c.name, T.c.version, T.c.key, T.c.value).order_by(T.c.key)):
            tags.setdefault((name, version), {})[key] = value
        return [row_to_version(r, aliases.get((r[0], r[1]), ()), tags.get((r[0], r[1]), {})) for r in rows]

    def get(self, conn: Connection, name: str, version: int) -> Version:
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
        query = select(V)
        for column, value in (("name", name), ("task", task), ("method", method), ("backbone", backbone)):
            if value is not None:
                query = query.where(V.c[column] == value)
        if not include_deprecated:
            query = query.where(V.c.deprecated == 0)
        for key, value in (tags or {}).items():
            query = query.where(
                exists().where(T.c.name == V.c.name, T.c.version == V.c.version, T.c.key == key, T.c.value == value)
            )
        with self.read() as conn:
            rows = conn.execute(query.order_by(V.c.name, V.c.version)).all()
            return self._complete(conn, rows)

    def names(self) -> list[str]:
        with self.read() as conn:
            return list(conn.execute(select(V.c.name).distinct().order_by(V.c.name)).scalars())

    def blob_refs(self, conn: Connection) -> set[str]:
        return set(conn.execute(select(V.c.sha256).distinct()).scalars())

    def row_sha(self, conn: Connection, name: str, *, version: int | None = None, sha256: str | None = None) -> str | None:
        """The sha256 of ``name``'s version with this number or this content, None if absent."""
        where = V.c.version == version if version is not None else V.c.sha256 == sha256
        return conn.execute(select(V.c.sha256).where(V.c.name == name, where)).scalar()

    def meta(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(select(meta_table.c.value).where(meta_table.c.key == key)).scalar()

    # ---------------------------------------------------------------- writes
    def insert(self, conn: Connection, row: Mapping[str, Any]) -> tuple[int, bool]:
        """(version, created) for ``row`` under its name; identical content keeps its version."""
        name = row["name"]
        conn.execute(self._upsert()(N).values(name=name, last_version=0).on_conflict_do_nothing(index_elements=["name"]))
        # Lock the counter row first: a concurrent publisher of this name waits here, and then
        # (READ COMMITTED) sees every version committed before it got the lock.
        last = conn.execute(select(N.c.last_version).where(N.c.name == name).with_for_update()).scalar_one()
        found = conn.execute(select(V.c.version).where(V.c.name == name, V.c.sha256 == row["sha256"])).scalar()
        if found is not None:
            return found, False
        version = last + 1
        conn.execute(update(N).where(N.c.name == name).values(last_version=version))
        conn.execute(V.insert().values(version_row(dict(row, version=version, deprecated=False))))
        return version, True

    def raise_counter(self, conn: Connection, name: str, last_version: int) -> None:
        """Make sure ``name``'s counter is at least ``last_version`` (it never goes down)."""
        conn.execute(self._upsert()(N).values(name=name, last_version=0).on_conflict_do_nothing(index_elements=["name"]))
        conn.execute(update(N).where(N.c.name == name, N.c.last_version < last_version).values(last_version=last_version))

    def restore(self, conn: Connection, version: Version) -> None:
        """Insert ``version`` under its own number (copying a registry); the counter follows."""
        self.raise_counter(conn, version.name, version.version)
        conn.execute(V.insert().values(version_row(vars(version))))

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        stmt = self._upsert()(meta_table).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

    def set_alias(self, conn: Connection, name: str, alias: str, version: int) -> None:
        # One UPSERT: readers see the old target or the new one, never neither.
        stmt = self._upsert()(A).values(name=name, alias=alias, version=version)
        conn.execute(stmt.on_conflict_do_update(index_elements=["name", "alias"], set_={"version": version}))

    def remove_alias(self, conn: Connection, name: str, alias: str) -> None:
        if conn.execute(delete(A).where(A.c.name == name, A.c.alias == alias)).rowcount == 0:
            self._require_name(conn, name)
            raise NotFoundError(f"{name} has no alias {alias!r}; its aliases: {_listing(self._aliases(conn, name))}")

    def set_tags(self, conn: Connection, name: str, version: int, tags: Mapping[str, str]) -> None:
        """Upsert tags; an empty value removes the key."""
        for key, value in tags.items():
            if value == "":
                conn.execute(delete(T).where(T.c.name == name, T.c.version == version, T.c.key == key))
            else:
                stmt = self._upsert()(T).values(name=name, version=version, key=key, value=value)
                conn.execute(stmt.on_conflict_do_update(index_elements=["name", "version", "key"], set_={"value": value}))

    def set_deprecated(self, conn: Connection, name: str, version: int, deprecated: bool) -> None:
        conn.execute(update(V).where(V.c.name == name, V.c.version == version).values(deprecated=int(deprecated)))

    def delete(self, conn: Connection, name: str, version: int) -> None:
        conn.execute(delete(A).where(A.c.name == name, A.c.version == version))
        conn.execute(delete(T).where(T.c.name == name, T.c.version == version))
        conn.execute(delete(V).where(V.c.name == name, V.c.version == version))
