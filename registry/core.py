"""The registry: immutable, content-addressed prompt versions behind human references.

A registry is a directory (``--registry DIR``, else ``$SPP_HOME``, else the per-user data
directory): ``blobs/`` holds each distinct artifact once, by sha256 (:mod:`.store`), and
``index.sqlite`` maps ``name@version`` to a blob plus searchable metadata (:mod:`.index`).

Publishing writes the blob first (temp file, fsync, rename) and the index row after it, in
one ``BEGIN IMMEDIATE`` transaction that also re-checks the blob under the write lock. So a
process killed at any point leaves either no trace, an orphan blob (``gc`` removes it), or
a complete version; concurrent publishers never lose or duplicate a version number.

Resolution: ``rte`` and ``rte@latest`` mean the newest version that is NOT deprecated
(deprecating a version rolls ``rte`` back to the one before); ``rte@3`` and aliases such as
``rte@prod`` resolve to their version even when it is deprecated, because naming a version
or alias is an explicit choice. Loading re-hashes the blob, so a corrupt file is reported
by reference and never returned.
"""

from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from spp.registry.errors import IntegrityError, PublishError, RegistryError
from spp.registry.index import Index, Version, publish_row
from spp.registry.refs import Ref, check_alias, check_name, check_tags, parse_ref
from spp.prompts.artifact.codec import canonical_bytes
from spp.prompts.artifact.files import MAX_ARTIFACT_BYTES, FileReadError, read_bounded
from spp.registry.store import BlobStore, sha256_bytes, sha256_file, stall_point

if TYPE_CHECKING:  # torch is imported only when an artifact is actually read or written
    from spp.prompts.artifact import Artifact

log = logging.getLogger(__name__)

HOME_ENV = "SPP_HOME"
INDEX_FILE = "index.sqlite"
_LINEAGE_DEPTH = 32
TEMP_GRACE_S = 3600.0  # gc keeps temp files younger than this: publishes that may still be running


def default_root() -> Path:
    """``$SPP_HOME`` if set, else the platform's per-user data directory for spp."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("spp", appauthor=False))


class Registry:
    """A prompt registry rooted at ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry path {self.root} exists and is not a directory")
        self.store = BlobStore(self.root)
        self.index = Index(self.root / INDEX_FILE)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's index connection (others close when their thread ends)."""
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
        data, label = _source_bytes(source)
        try:
            data = canonical_bytes(data)
        except (ValueError, UnicodeDecodeError):
            pass  # not safetensors at all: _validate names the problem
        meta = _validate(data, label)
        name = check_name(name if name is not None else meta.task, error=PublishError)
        aliases = [check_alias(a, error=PublishError) for a in aliases]
        tag_values = check_tags(tags or {}, error=PublishError)
        sha = sha256_bytes(data)
        try:
            self.store.put(data, sha)
        except OSError as exc:  # disk full, read-only registry: one line, nothing indexed
            raise PublishError(f"cannot store {label} in {self.root}: {exc.strerror or exc}") from None
        stall_point("after-blob")
        row = publish_row(
            meta, name=name, sha256=sha, size=len(data),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        with self.index.write() as conn:
            if not self.store.exists(sha):  # a concurrent gc/rm removed it: rewrite under the lock
                self.store.put(data, sha)
            version, created = self.index.insert(conn, row)
            self.index.set_tags(conn, name, version, tag_values)
            for alias in aliases:
                self.index.set_alias(conn, name, alias, version)
            stall_point("in-transaction")
            result = self.index.get(conn, name, version)
        log.info("%s %s (sha256 %s)", "published" if created else "already published as", result.ref, sha[:12])
        return result, created

    # ------------------------------------------------------------------ read
    def resolve(self, ref: "str | Ref") -> Version:
        """``rte`` / ``rte@latest`` (newest non-deprecated), ``rte@3``, ``rte@prod``."""
        parsed = ref if isinstance(ref, Ref) else parse_ref(ref)
        with self.index.read() as conn:
            return self.index.find(conn, parsed)

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
        path = self.store.path(version.sha256)
        try:
            data = self.store.read(version.sha256)
        except FileNotFoundError:
            raise IntegrityError(f"{version.ref}: blob missing ({path}); run `spp verify`") from None
        if len(data) != version.size:
            raise IntegrityError(
                f"{version.ref}: blob truncated or overwritten ({len(data)} bytes, expected {version.size}) in {path}"
            )
        actual = sha256_bytes(data)
        if actual != version.sha256:
            raise IntegrityError(
                f"{version.ref}: blob sha256 mismatch (expected {version.sha256[:12]}..., got {actual[:12]}...) "
                f"in {path}; the file is corrupt"
            )
        return data

    def blob_path(self, v: Version) -> Path:
        return self.store.path(v.sha256)

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
            v = self.index.find(conn, parsed)
            if v.aliases and not force:
                names = ", ".join(f"{v.name}@{a}" for a in v.aliases)
                raise RegistryError(
                    f"{v.ref} is aliased as {names}; move or remove the alias first "
                    f"(spp alias rm {v.name} {v.aliases[0]}) or pass --force (force=True)"
                )
            self.index.delete(conn, v.name, v.version)
            if v.sha256 not in self.index.blob_refs(conn):
                self.store.remove(v.sha256)  # under the write lock: no publish can be adopting it
        return v

    # ------------------------------------------------------------------ maintenance
    def verify(self) -> list[tuple[Version, str]]:
        """Re-hash every blob the index refers to; (version, reason) for each bad one."""
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
        path = self.store.path(v.sha256)
        if not path.is_file():
            return f"blob missing ({path})"
        size = path.stat().st_size
        if size != v.size:
            return f"blob truncated or overwritten ({size} bytes, expected {v.size}) in {path}"
        actual = sha256_file(path)
        if actual != v.sha256:
            return f"blob sha256 mismatch (got {actual[:12]}..., expected {v.sha256[:12]}...) in {path}"
        return None

    def gc(self, *, temp_grace_s: float = TEMP_GRACE_S) -> list[Path]:
        """Remove blobs no version refers to, and temp files older than ``temp_grace_s`` seconds.

        A temp file is a publish in flight until it is renamed into place, so the grace (default
        an hour) protects writers that are still running; 0 removes every temp file, for when no
        publish can be running.
        """
        from spp.prompts.config import check_number

        temp_grace_s = check_number("gc grace (seconds)", temp_grace_s, RegistryError, minimum=0)
        removed: list[Path] = []
        with self.index.write() as conn:  # the lock keeps publishers from adopting a blob we delete
            referenced = self.index.blob_refs(conn)
            for sha, path in list(self.store.iter_blobs()):
                if sha not in referenced:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        for path in self.store.stale_temp_files(temp_grace_s):
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed


def _source_bytes(source: "str | os.PathLike[str] | Artifact | bytes") -> tuple[bytes, str]:
    from spp.prompts.artifact import Artifact, ArtifactError, artifact_bytes

    if isinstance(source, Artifact):
        try:
            return artifact_bytes(source), f"artifact for task {source.meta.task!r}"
        except ArtifactError as exc:
            raise PublishError(f"cannot publish artifact for task {source.meta.task!r}: {exc}") from None
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_ARTIFACT_BYTES:
            raise PublishError(f"cannot publish <bytes>: {len(source)} bytes, more than the maximum of {MAX_ARTIFACT_BYTES}")
        return bytes(source), "<bytes>"
    path = Path(source)
    try:  # a file from anywhere: regular files up to MAX_ARTIFACT_BYTES only (never /dev/zero)
        return read_bounded(path), str(path)
    except FileReadError as exc:
        raise PublishError(f"cannot publish {exc}") from None
    except OSError as exc:
        raise PublishError(f"cannot publish {path}: {exc.strerror or exc}") from None


def _validate(data: bytes, label: str):
    """Header, required metadata, prompt shape n x d_model, finite values, numeric metrics."""
    from spp.prompts.artifact import ArtifactError, decode

    try:
        artifact = decode(data)
    except ArtifactError as exc:
        raise PublishError(f"cannot publish {label}: {exc}") from None
    _check_metrics(artifact.meta.metrics, label)
    return artifact.meta


def _check_metrics(metrics: Any, label: str) -> None:
    ok = isinstance(metrics, dict) and all(
        isinstance(split, dict)
        and all(isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool) for k, x in split.items())
        for split in metrics.values()
    )
    if not ok:
        raise PublishError(f"cannot publish {label}: metadata 'metrics' must map split -> metric name -> number")
    if any(not math.isfinite(x) for split in metrics.values() for x in split.values()):
        raise PublishError(f"cannot publish {label}: metadata 'metrics' contains NaN or infinite values")
