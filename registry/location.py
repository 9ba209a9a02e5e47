"""Where a registry lives, parsed from ONE string: the same in every command and the server.

    /srv/prompts                                     a directory: blobs/ + index.sqlite (one host)
    postgresql://spp@db:5432/prompts?store=s3://bucket/prompts
                                                     a shared registry: index in PostgreSQL,
                                                     blobs in any fsspec store (file://, s3://, gs://)

``None`` means ``$SPP_REGISTRY``, else ``$SPP_HOME``, else the per-user data directory. Any other
``scheme://`` is refused (a URL is never silently taken for a relative directory name).
Passwords belong in ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads them); one written into the
URL still works but is masked in every message and repr (:func:`mask`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from spp.registry.errors import RegistryError

HOME_ENV = "SPP_HOME"
LOCATION_ENV = "SPP_REGISTRY"
DB_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
STORE_SCHEMES = ("file", "s3", "gs", "gcs")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_USERINFO_PASSWORD_RE = re.compile(r"(://[^/@:?#]*):[^/@?#]*@")
# The pip extra that provides each store's fsspec implementation (the index needs `postgres`).
STORE_EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}


class LocationError(RegistryError):
    """The registry location string is malformed or names an unsupported scheme."""


def mask(text: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` (anywhere in ``text``)."""
    return _USERINFO_PASSWORD_RE.sub(r"\1:***@", text)


@dataclass(frozen=True)
class Location:
    """A parsed registry location: a directory, or a database URL plus a blob store URL."""

    root: Path | None = None  # directory registries
    db_url: str | None = None  # shared registries: postgresql://... without the store parameter
    store: str | None = None  # shared registries: the fsspec URL of the blob store

    @property
    def shared(self) -> bool:
        return self.db_url is not None

    @property
    def display(self) -> str:
        """How messages name this registry (password masked)."""
        if self.root is not None:
            return str(self.root)
        return mask(f"{self.db_url}{'&' if '?' in str(self.db_url) else '?'}store={self.store}")

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"Location({self.display!r})"

    def sqlalchemy_url(self) -> str:
        """The database URL in SQLAlchemy's form (psycopg 3 driver) with a short connect timeout."""
        assert self.db_url is not None
        parts = urlsplit(self.db_url)
        query = dict(parse_qsl(parts.query))
        query.setdefault("connect_timeout", "3")  # an unreachable host fails in seconds, not minutes
        return urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, urlencode(query), ""))


def default_root() -> Path:
    """``$SPP_HOME`` if set, else the platform's per-user data directory for spp."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("spp", appauthor=False))


def parse_location(value: "str | os.PathLike[str] | Location | None" = None) -> Location:
    """Parse a ``--registry`` value (None: ``$SPP_REGISTRY``, else the default directory)."""
    if isinstance(value, Location):
        return value
    if value is None:
        value = os.environ.get(LOCATION_ENV) or None
        if value is None:
            return Location(root=default_root())
    if isinstance(value, os.PathLike):
        return Location(root=Path(value).expanduser())
    if not isinstance(value, str) or not value.strip():
        raise LocationError(f"registry location must be a directory or a postgresql:// URL, got {value!r}")
    match = _SCHEME_RE.match(value)
    if match is None:
        return Location(root=Path(value).expanduser())
    scheme = match.group(1).lower()
    if scheme not in DB_SCHEMES:
        raise LocationError(
            f"unsupported registry location {mask(value)}: use a directory path or "
            "postgresql://USER@HOST:PORT/DB?store=STORE_URL"
        )
    return _parse_db_url(value)


def _parse_db_url(value: str) -> Location:
    parts = urlsplit(value)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    stores = [v for k, v in pairs if k == "store"]
    rest = [(k, v) for k, v in pairs if k != "store"]
    shown = mask(value)
    if not parts.hostname or not parts.path.strip("/"):
        raise LocationError(f"registry URL {shown} needs a host and a database: postgresql://USER@HOST:PORT/DB?store=...")
    if len(stores) != 1 or not stores[0]:
        raise LocationError(
            f"registry URL {shown} needs exactly one ?store=STORE_URL for the blobs "
            "(file:///shared/prompts, s3://bucket/prefix or gs://bucket/prefix)"
        )
    store = stores[0]
    store_scheme = _SCHEME_RE.match(store)
    if store_scheme is None or store_scheme.group(1).lower() not in STORE_SCHEMES:
        raise LocationError(
            f"registry URL {shown}: unsupported blob store {mask(store)}; use file:///PATH, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"
        )
    if store_scheme.group(1).lower() == "file" and not urlsplit(store).path.startswith("/"):
        raise LocationError(f"registry URL {shown}: a file:// store needs an absolute path (file:///shared/prompts)")
    db_url = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    return Location(db_url=db_url, store=store)
