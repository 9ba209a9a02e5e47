"""The ledger: what a registry must never forget, kept in the blob store, outside the index.

If the index is deleted or replaced (``rm index.sqlite``, a database restored from an old
backup, a wrong ``?store=``), a registry that trusted only its index would restart at
``rte@1`` with other content and let ``gc`` delete blobs a running server still serves. So the
store also holds:

    ledger/identity.json                 {"registry_id": ...}: the index it belongs to
    ledger/versions/<name>/<n>.json      {"sha256", "created_at", "removed"}: one per version

Publish and gc refuse to run when the index's identity differs from the store's, or when the
index would hand out a version number the ledger has already seen (an index behind its
store); :meth:`~spp.registry.Registry.rebuild_index` reconstructs an index from the ledger and
the blobs' own metadata, with the same numbers. A record is written right after its version's
commit, so a crash in between can only leave the ledger one version behind (detection stays
sound: an index is never reported as lost because of it).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from spp.registry.errors import RegistryError

if TYPE_CHECKING:
    from spp.registry.core import Registry

log = logging.getLogger(__name__)

IDENTITY = "ledger/identity.json"
VERSIONS = "ledger/versions"


class MismatchError(RegistryError):
    """The index does not belong to this blob store, or is behind it (lost or replaced)."""


class Ledger:
    """The ledger of one blob store (either kind: both have get_doc/put_doc/list_docs)."""

    def __init__(self, store: Any, display: str) -> None:
        self.store = store
        self.display = display

    def _get(self, key: str) -> bytes | None:
        try:
            return self.store.get_doc(key)
        except (OSError, ValueError) as exc:  # unreadable store: one line naming it
            raise RegistryError(f"cannot read the blob store of {self.display}: {_reason(exc)}") from None

    def _put(self, key: str, data: bytes) -> None:
        try:
            self.store.put_doc(key, data)
        except (OSError, ValueError) as exc:  # read-only or unreachable store
            raise RegistryError(f"cannot store {key} in {self.display}: {_reason(exc)}") from None

    def identity(self) -> str | None:
        raw = self._get(IDENTITY)
        return None if raw is None else json.loads(raw)["registry_id"]

    def claim(self, registry_id: str | None) -> None:
        """Check that the index (``registry_id``) belongs to this store; the first one claims it."""
        found = self.identity()
        if found is None and registry_id is not None:
            self._put(IDENTITY, json.dumps({"registry_id": registry_id}).encode())
        elif found != registry_id:
            raise MismatchError(
                f"the index of {self.display} does not belong to its blob store (index {registry_id}, "
                f"store {found}): it was replaced or lost; refusing to write. Restore it, or run "
                "`spp registry rebuild-index` to rebuild it from the blobs"
            )

    def check_number(self, name: str, version: int) -> None:
        """Refuse to hand out ``name@version`` again: the ledger has already seen it."""
        if self._get(f"{VERSIONS}/{name}/{version}.json") is not None:
            raise MismatchError(
                f"the index of {self.display} is behind its blob store: {name}@{version} was already "
                "published; the index was restored from an old copy or replaced. Run "
                "`spp registry rebuild-index` to rebuild it from the blobs"
            )

    def record(self, name: str, version: int, sha256: str, created_at: str, *, removed: bool = False) -> None:
        doc = {"sha256": sha256, "created_at": created_at, "removed": removed}
        self._put(f"{VERSIONS}/{name}/{version}.json", json.dumps(doc, sort_keys=True).encode())

    def records(self) -> dict[str, dict[int, dict[str, Any]]]:
        """name -> version -> record, for every version this store has seen."""
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for key in self.store.list_docs(VERSIONS):
            name, leaf = key[len(VERSIONS) + 1 :].rsplit("/", 1)
            raw = self._get(key) if leaf.endswith(".json") and leaf[:-5].isdigit() else None
            if raw is not None:
                out.setdefault(name, {})[int(leaf[:-5])] = json.loads(raw)
        return out


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or " ".join(str(exc).split())


def rebuild_index(reg: "Registry") -> tuple[list[str], list[str]]:
    """Fill an EMPTY index from the ledger and the blobs' own metadata: every version under its
    own number, each name's counter past every number ever used, the store's identity. Aliases,
    tags and deprecation marks live only in the index and are not restored.
    Returns (refs rebuilt, refs skipped because their blob is missing or corrupt)."""
    from spp.registry.intake import validate_artifact
    from spp.registry.schema import Version, publish_row
    from spp.registry.store import sha256_bytes

    if reg.list():
        raise RegistryError(
            f"the index of {reg.location.display} is not empty; rebuild-index only fills a new, empty index "
            "(move index.sqlite* aside, or point the URL at an empty database)"
        )
    records, rebuilt, skipped = reg.ledger.records(), [], []

    def write(conn) -> None:
        rebuilt.clear(), skipped.clear()  # a retried transaction starts over
        for name, versions in sorted(records.items()):
            for number, record in sorted(versions.items()):
                ref, sha = f"{name}@{number}", record["sha256"]
                if record["removed"]:
                    continue
                try:
                    data = reg.store.read(sha)
                except FileNotFoundError:
                    data = b""
                if sha256_bytes(data) != sha:
                    log.warning("not rebuilt: %s (blob missing or corrupt in %s)", ref, reg.store.where(sha))
                    skipped.append(ref)
                    continue
                row = publish_row(validate_artifact(data, ref), name=name, sha256=sha, size=len(data),
                                  created_at=record["created_at"])
                reg.index.restore(conn, Version(**row, version=number))
                rebuilt.append(ref)
            reg.index.raise_counter(conn, name, max(versions))
        identity = reg.ledger.identity()
        if identity is not None:
            reg.index.set_meta(conn, "registry_id", identity)

    reg.index.transact(write)
    return rebuilt, skipped
