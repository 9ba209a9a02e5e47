"""The registry: immutable, content-addressed prompt versions behind human references.

A registry lives at one location (:mod:`.location`): a directory (``--registry DIR``, else
``$SPP_REGISTRY``, else ``$SPP_HOME``, else the per-user data directory) with ``blobs/`` (each
distinct artifact once, by sha256: :mod:`.store`) and ``index.sqlite``; or a shared registry,
``postgresql://USER@HOST/DB?store=STORE_URL``, whose index is in PostgreSQL and whose blobs are
in any fsspec store. The same :class:`Registry` API and semantics hold for both (:mod:`.index`).

Publishing writes the blob first and the index row after it, in one transaction that takes
the name's version counter and re-checks the blob under a lock that gc and rm also take. So a
process killed at any point leaves either no trace, an orphan blob (``gc`` removes it), or a
complete version; concurrent publishers, on any number of hosts, never lose or duplicate a
version number.

Resolution: ``rte`` and ``rte@latest`` mean the newest version that is NOT deprecated
(deprecating a version rolls ``rte`` back to the one before); ``rte@3`` and aliases such as
``rte@prod`` resolve to their version even when it is deprecated, because naming a version
or alias is an explicit choice. Loading re-hashes the blob, so a corrupt file is reported
by reference and never returned. A shared registry keeps a local blob cache (``cache_dir``,
else ``$SPP_BLOB_CACHE``, else the per-user cache directory), also keyed and checked by sha256.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from spp.prompts.artifact.codec import canonical_bytes
from spp.registry.errors import IntegrityError, PublishError, RegistryError
from spp.registry.index import Index, Version, publish_row
from spp.registry.intake import source_bytes, validate_artifact
from spp.registry.ledger import Ledger
from spp.registry.location import HOME_ENV, Location, default_root, parse_location
from spp.registry.refs import Ref, check_alias, check_name, check_tags, parse_ref
from spp.registry.store import BlobStore, open_store, sha256_bytes, stall_point

if TYPE_CHECKING:  # torch is imported only when an artifact is actually read or written
    from spp.prompts.artifact import Artifact

log = logging.getLogger(__name__)

__all__ = ["HOME_ENV", "Registry", "default_root"]

CACHE_ENV = "SPP_BLOB_CACHE"
_LINEAGE_DEPTH = 32
TEMP_GRACE_S = 3600.0  # gc keeps temp files younger than this: publishes that may still be running


def default_cache_dir() -> Path:
    """``$SPP_BLOB_CACHE`` if set, else the per-user cache directory (shared registries only)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("spp", appauthor=False)) / "blobs"


class Registry:
    """A prompt registry at ``location`` (a directory, created on first write, or a
    ``postgresql://...?store=...`` URL). ``must_exist``: refuse a directory that is not there
    (a server must not create an empty registry because of a typo)."""

    def __init__(
        self,
        location: "str | os.PathLike[str] | Location | None" = None,
        *,
        cache_dir: "str | os.PathLike[str] | None" = None,
        must_exist: bool = False,
    ) -> None:
        self.location = parse_location(location)
        self.root: Path | None = self.location.root
        self.cache: BlobStore | None = None
        if self.root is not None:
            if self.root.exists() and not self.root.is_dir():
                raise RegistryError(f"registry path {self.root} exists and is not a directory")
            if must_exist and not self.root.is_dir():
                raise RegistryError(f"registry directory {self.root} does not exist")
            self.store = BlobStore(self.root)
        else:
            self.store = open_store(self.location.store, self.location.display)  # type: ignore[arg-type]
            self.cache = BlobStore(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
        self.index = Index(self.location)
        self.ledger = Ledger(self.store, self.location.display)

    def __repr__(self) -> str:
        return f"Registry({self.location.display!r})"

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the index's pooled connections (the next call reopens them)."""
        self.index.close()

    # ------------------------------------------------------------------ publish
    def publish(
        self,
        source: "str | os.PathLike[str] | Artifact | bytes",
        *,
        name: str | None = None,
        aliases: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
    ) -> tuple[Version, bool]:
        """Validate and store an artifact; returns (version, created).

        ``name`` defaults to the artifact's task. The store keeps the file's canonical bytes
        (:func:`~spp.prompts.artifact.canonical_bytes`): a file spp wrote is kept byte for
        byte, so its registry sha256 is its own ``sha256sum``; a file from another writer
        (safetensors' own, an old spp) has its header rewritten. Identical content already
        published under the same name returns that version with ``created=False`` (its aliases
        and tags are still applied). Any problem with the file is a one-line :class:`PublishError`.
        """
        data, label = source_bytes(source)
        try:
            data = canonical_bytes(data)
        except (ValueError, UnicodeDecodeError):
            pass  # not safetensors at all: _validate names the problem
        meta = validate_artifact(data, label)
        name = check_name(name if name is not None else meta.task, error=PublishError)
        aliases = [check_alias(a, error=PublishError) for a in aliases]
        tag_values = check_tags(tags or {}, error=PublishError)
        sha = sha256_bytes(data)
        self.ledger.claim(self.registry_id())  # an index that lost its store's history must not write
        self._put(data, sha, label)
        stall_point("after-blob")
        row = publish_row(
            meta, name=name, sha256=sha, size=len(data),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

        def write(conn) -> tuple[Version, bool]:
            self.index.lock_blobs(conn, exclusive=False)
            if not self.store.exists(sha):  # a concurrent gc/rm removed it: rewrite under the lock
                self._put(data, sha, label)
            version, created = self.index.insert(conn, row)
            if created:
                self.ledger.check_number(name, version)
            self.index.set_tags(conn, name, version, tag_values)
            for alias in aliases:
                self.index.set_alias(conn, name, alias, version)
            stall_point("in-transaction")
            return self.index.get(conn, name, version), created

        result, created = self.index.transact(write)
        if created:
            self.ledger.record(name, result.version, sha, row["created_at"])
        log.info("%s %s (sha256 %s)", "published" if created else "already published as", result.ref, sha[:12])
        return result, created

    def _put(self, data: bytes, sha: str, label: str) -> None:
        try:
            self.store.put(data, sha)
        except (OSError, ValueError) as exc:  # disk full, read-only store, bucket refused: nothing indexed
            reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())
            raise PublishError(f"cannot store {label} in {self.location.display}: {reason}") from None

    # ------------------------------------------------------------------ read
    def resolve(self, ref: "str | Ref", *, details: bool = True) -> Version:
        """``rte`` / ``rte@latest`` (newest non-deprecated), ``rte@3``, ``rte@prod``.

        ``details=False`` leaves the Version's aliases and tags empty: one indexed query instead
        of three, for a hot path that only needs which blob a reference names now (the server
        resolves every request: 0.61 -> 0.22 ms per call on SQLite; on a shared PostgreSQL index,
        one round trip instead of three)."""
        parsed = ref if isinstance(ref, Ref) else parse_ref(ref)
        with self.index.read() as conn:
            return self.index.find(conn, parsed, details=details)

    def load(self, ref: "str | Version") -> "tuple[Version, Artifact]":
        """Resolve, read the blob, check its size and sha256, then parse it."""
        from spp.prompts.artifact import ArtifactError, decode

        version = ref if isinstance(ref, Version) else self.resolve(ref)
        data = self._read_checked(version)
        try:
            return version, decode(data)
        except ArtifactError as exc:
            raise IntegrityError(f"{version.ref}: stored artifact is unreadable: {exc}") from None

    def _read_checked(self, version: Version) -> bytes:
        """The version's bytes, size- and sha256-checked (through the local cache if any)."""
        if self.cache is not None and self.cache.size(version.sha256) == version.size:
            data = self.cache.read(version.sha256)
            if sha256_bytes(data) == version.sha256:
                return data
            log.warning("cached blob of %s is corrupt; fetching it again", version.ref)
        where = self.store.where(version.sha256)
        try:
            data = self.store.read(version.sha256)
        except FileNotFoundError:
            raise IntegrityError(f"{version.ref}: blob missing ({where}); run `spp verify`") from None
        if len(data) != version.size:
            raise IntegrityError(
                f"{version.ref}: blob truncated or overwritten ({len(data)} bytes, expected {version.size}) in {where}"
            )
        actual = sha256_bytes(data)
        if actual != version.sha256:
            raise IntegrityError(
                f"{version.ref}: blob sha256 mismatch (expected {version.sha256[:12]}..., got {actual[:12]}...) "
                f"in {where}; the file is corrupt"
            )
        if self.cache is not None:
            self.cache.put(data, version.sha256)
        return data

    def blob_path(self, v: Version, *, verify: bool = True) -> Path:
        """A local file holding the version's blob: the store's own file, or the cached copy
        of a blob from a remote store (fetched and sha256-checked first).

        ``verify=False`` returns an existing cached copy of the right size without hashing it:
        for callers that re-check only when the file's stat changes (the server's /tasks), so a
        listing does not re-read every blob. A missing copy is still fetched and checked.
        """
        if self.cache is None:
            return self.store.path(v.sha256)  # type: ignore[union-attr]
        if verify or self.cache.size(v.sha256) != v.size:
            self._read_checked(v)
        return self.cache.path(v.sha256)

    def blob_location(self, v: Version) -> str:
        """Where the store keeps the version's blob (a path or URL, for messages)."""
        return self.store.where(v.sha256)

    def list(
        self,
        *,
        task: str | None = None,
        method: str | None = None,
        backbone: str | None = None,
        tags: Mapping[str, str] | None = None,
        name: str | None = None,
        include_deprecated: bool = True,
    ) -> list[Version]:
        """Versions matching every given filter, ordered by name then version."""
        return self.index.search(
            name=name, task=task, method=method, backbone=backbone, tags=tags, include_deprecated=include_deprecated
        )

    def names(self) -> list[str]:
        return self.index.names()

    def lineage(self, ref: "str | Version") -> dict[str, list[str]]:
        """``ancestors``: the parent chain (refs or file names, nearest first) as far as it
        is known; ``children``: versions whose recorded parent is this version's reference."""
        version = ref if isinstance(ref, Version) else self.resolve(ref)
        ancestors: list[str] = []
        parent, seen = version.parent, {version.ref}
        while parent and parent not in seen and len(ancestors) < _LINEAGE_DEPTH:
            ancestors.append(parent)
            seen.add(parent)
            try:
                parent = self.resolve(parent).parent
            except RegistryError:  # a file path or a version no longer here: the chain ends
                break
        children = [v.ref for v in self.list() if v.parent == version.ref]
        return {"ancestors": ancestors, "children": children}

    # ------------------------------------------------------------------ changes
    def set_alias(self, ref: str, alias: str) -> Version:
        """Point ``name@alias`` at the version ``ref`` resolves to (moves it atomically)."""
        check_alias(alias)
        with self.index.write() as conn:
            v = self.index.find(conn, parse_ref(ref))
            self.index.set_alias(conn, v.name, alias, v.version)
            return self.index.get(conn, v.name, v.version)

    def remove_alias(self, name: str, alias: str) -> None:
        check_name(name)
        with self.index.write() as conn:
            self.index.remove_alias(conn, name, alias)

    def tag(self, ref: str, tags: Mapping[str, str]) -> Version:
        """Add or change tags (an empty value removes that tag)."""
        values = check_tags(tags)
        with self.index.write() as conn:
            v = self.index.find(conn, parse_ref(ref))
            self.index.set_tags(conn, v.name, v.version, values)
            return self.index.get(conn, v.name, v.version)

    def deprecate(self, ref: str, *, deprecated: bool = True) -> Version:
        """Mark (or with ``deprecated=False`` unmark) a version; plain ``name`` then skips it."""
        with self.index.write() as conn:
            v = self.index.find(conn, parse_ref(ref))
            self.index.set_deprecated(conn, v.name, v.version, deprecated)
            return self.index.get(conn, v.name, v.version)

    def remove(self, ref: str, *, force: bool = False) -> Version:
        """Delete one version (by number or alias, never a bare name) and its blob if unshared.

        Refused while an alias points at it, unless ``force`` (which removes those aliases).
        """
        parsed = parse_ref(ref)
        if parsed.version is None and parsed.alias is None:
            raise RegistryError(f"removing needs an explicit version or alias (e.g. {parsed.name}@3), got {ref!r}")
        with self.index.write() as conn:
            self.index.lock_blobs(conn, exclusive=True)
            v = self.index.find(conn, parsed)
            if v.aliases and not force:
                names = ", ".join(f"{v.name}@{a}" for a in v.aliases)
                raise RegistryError(
                    f"{v.ref} is aliased as {names}; move or remove the alias first "
                    f"(spp alias rm {v.name} {v.aliases[0]}) or pass --force (force=True)"
                )
            self.index.delete(conn, v.name, v.version)
            if v.sha256 not in self.index.blob_refs(conn):
                self.store.remove(v.sha256)  # under the lock: no publish can be adopting it
        self.ledger.record(v.name, v.version, v.sha256, v.created_at, removed=True)  # the number stays retired
        return v

    # ------------------------------------------------------------------ maintenance
    def migrate(self) -> tuple[str | None, str]:
        """Upgrade the index schema in place; (revision before, revision after)."""
        return self.index.migrate()

    def registry_id(self) -> str | None:
        """The random identity recorded when the index was created (schema revision 0002)."""
        return self.index.meta("registry_id")

    def verify(self) -> list[tuple[Version, str]]:
        """Re-hash every blob the index refers to, in the store itself; (version, reason) for each bad one."""
        bad: list[tuple[Version, str]] = []
        cache: dict[str, str | None] = {}
        for v in self.list():
            if v.sha256 not in cache:
                cache[v.sha256] = self._blob_problem(v)
            if cache[v.sha256] is not None:
                bad.append((v, cache[v.sha256]))
        return bad

    def check_blob(self, v: Version) -> str | None:
        """Why the blob of ``v`` must not be served (missing, wrong size, sha256 mismatch), or None."""
        return self._blob_problem(v)

    def _blob_problem(self, v: Version) -> str | None:
        where = self.store.where(v.sha256)
        size = self.store.size(v.sha256)
        if size is None:
            return f"blob missing ({where})"
        if size != v.size:
            return f"blob truncated or overwritten ({size} bytes, expected {v.size}) in {where}"
        actual = self.store.digest(v.sha256)
        if actual != v.sha256:
            return f"blob sha256 mismatch (got {actual[:12]}..., expected {v.sha256[:12]}...) in {where}"
        return None

    def gc(self, *, temp_grace_s: float = TEMP_GRACE_S) -> "list[Path | str]":
        """Remove blobs no version refers to, and temp files older than ``temp_grace_s`` seconds.

        A temp file is a publish in flight until it is renamed into place, so the grace (default
        an hour) protects writers that are still running; 0 removes every temp file, for when no
        publish can be running.
        """
        from spp.prompts.config import check_number

        temp_grace_s = check_number("gc grace (seconds)", temp_grace_s, RegistryError, minimum=0)
        removed: list[Path | str] = []
        self.ledger.claim(self.registry_id())  # never collect blobs on the word of a replaced index
        with self.index.write() as conn:  # the lock keeps publishers from adopting a blob we delete
            self.index.lock_blobs(conn, exclusive=True)
            referenced = self.index.blob_refs(conn)
            for sha, _where in list(self.store.iter_blobs()):
                if sha not in referenced:
                    gone = self.store.remove(sha)
                    if gone is not None:
                        removed.append(gone)
        for path in self.store.stale_temp_files(temp_grace_s):
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed


    def rebuild_index(self) -> tuple[list[str], list[str]]:
        """Rebuild an empty index from the store's ledger (:func:`.ledger.rebuild_index`)."""
        from spp.registry.ledger import rebuild_index

        return rebuild_index(self)
