"""Engines for the index (SQLite file or PostgreSQL) and the Alembic schema migrations.

SQLite keeps what the embedded registry always had: WAL (readers never block a publish),
``synchronous=FULL``, foreign keys, a 60 s busy timeout, and write transactions that take the
write lock first (``BEGIN IMMEDIATE``, so two publishers can never both read "last version =
4"). PostgreSQL gets a pre-ping pool (a restarted server is reconnected to, not an error
forever) and a short connect timeout (an outage is reported in seconds).

Schema: the embedded index is migrated to the head revision when it is opened (one host, one
spp: as before), including a 0.1.0 index that predates Alembic (stamped at the baseline
first). A shared index is created on first use when the database is empty; an older one is
upgraded only by ``spp registry migrate``, because other hosts may still run the older spp.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from spp.registry.errors import RegistryError, UnavailableError
from spp.registry.location import Location, mask
from spp.registry.schema import SCHEMA_HEAD

BUSY_TIMEOUT_MS = 60_000
MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"  # the schema spp 0.1.0 created without Alembic
_PG_MIGRATION_LOCK = 0x5370_7052  # advisory lock id ("SppR"): one migrator at a time
WRITE = {"spp_write": True}  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class SchemaError(RegistryError):
    """The index schema is older or newer than this spp can use without a migration."""


def sqlite_engine(path: Path) -> Engine:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot create registry directory {path.parent}: {exc.strerror}") from None
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is DEFERRED)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        retry_locked(lambda: cur.execute("PRAGMA journal_mode = WAL"))
        cur.execute("PRAGMA synchronous = FULL")  # a reported publish survives power loss
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("spp_write"):
            retry_locked(lambda: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def postgres_engine(location: Location) -> Engine:
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:  # the missing extra gets its own line
        raise RegistryError(
            f"registry {location.display} needs the PostgreSQL driver: pip install 'spp[postgres]'"
        )
    # READ COMMITTED: after waiting for a row lock a statement sees what the holder committed,
    # which is what version allocation relies on (see Index.insert).
    return create_engine(location.sqlalchemy_url(), pool_pre_ping=True, pool_size=4, max_overflow=8,
                         isolation_level="READ COMMITTED")


def retry_locked(fn: Callable[[], Any], attempts: int = 5) -> Any:
    """SQLite can report 'locked' without calling the busy handler (e.g. while another connection
    switches the file to WAL); retry a few times on top of busy_timeout."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # sqlite3.OperationalError, raw or wrapped by SQLAlchemy
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.02 * (i + 1))


def unavailable(display: str, exc: BaseException) -> UnavailableError:
    """One line naming the registry (password masked) and the driver's first line of reason."""
    orig = getattr(exc, "orig", None) or exc
    reason = " ".join(mask(str(orig)).split()) or type(orig).__name__
    return UnavailableError(f"registry index {display} is unavailable: {reason[:300]}")


# ---------------------------------------------------------------------------------- migrations
def current_revision(conn: Connection) -> str | None:
    """The Alembic revision, ``BASELINE`` for a pre-Alembic 0.1.0 index, None for an empty one."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return BASELINE if "versions" in tables else None


def _alembic_config(conn: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def known_revisions() -> list[str]:
    """Every revision the shipped migration scripts define, base first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def upgrade(engine: Engine, display: str) -> tuple[str | None, str]:
    """Bring the schema to the head revision under the database's write lock; (before, after)."""
    from alembic import command

    with engine.connect().execution_options(**WRITE) as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":  # DDL is transactional; the lock serialises migrators
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            before = current_revision(conn)
            _refuse_newer(before, display)
            cfg = _alembic_config(conn)
            if before == BASELINE and "alembic_version" not in inspect(conn).get_table_names():
                command.stamp(cfg, BASELINE)
            if before != SCHEMA_HEAD:
                command.upgrade(cfg, "head")
    return before, SCHEMA_HEAD


def _refuse_newer(revision: str | None, display: str) -> None:
    if revision is not None and revision != SCHEMA_HEAD and revision not in known_revisions():
        raise SchemaError(
            f"registry index {display} has schema revision {revision}, which this spp does not know "
            "(written by a newer spp?); upgrade spp"
        )


def ensure_schema(engine: Engine, display: str, *, auto_upgrade: bool) -> None:
    """Fast path: one query when the schema is current. Else create or migrate (see module doc)."""
    with engine.connect() as conn:
        revision = current_revision(conn)
        conn.rollback()
    if revision == SCHEMA_HEAD:
        return
    _refuse_newer(revision, display)
    if revision is not None and not auto_upgrade:
        raise SchemaError(
            f"registry index {display} has schema revision {revision}, this spp needs {SCHEMA_HEAD}: "
            f"run `spp registry migrate --registry '{display}'` once (after every host has this spp)"
        )
    upgrade(engine, display)


def make_engine(location: Location) -> Engine:
    """An engine for the location's index (nothing is connected or checked yet)."""
    if location.shared:
        return postgres_engine(location)
    return sqlite_engine(location.root / "index.sqlite")  # type: ignore[operator]


def open_engine(location: Location, *, migrate: bool = False) -> Engine:
    """An engine for the location's index, its schema ready; errors are one line naming it.

    ``migrate``: upgrade a shared index too (``spp registry migrate``)."""
    shared = location.shared
    engine = make_engine(location)
    try:
        ensure_schema(engine, location.display, auto_upgrade=migrate or not shared)
    except DBAPIError as exc:
        engine.dispose()
        if shared:
            raise unavailable(location.display, exc) from None
        raise RegistryError(f"cannot open registry index {location.root / 'index.sqlite'}: {exc.orig}") from None  # type: ignore[operator]
    except BaseException:
        engine.dispose()
        raise
    return engine

