"""Copy a whole registry into another one: every version under its own number, every alias
and tag, the deprecation marks and each name's version counter; every blob's sha256 checked
on both sides. Used to move a directory registry to a shared one and back.

Copying is idempotent: a version the destination already holds with the same content is
skipped, so an interrupted copy can simply be run again. A destination version with the same
number but other content is a conflict and stops the copy (nothing is overwritten).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from spp.registry.core import Registry
from spp.registry.errors import IntegrityError, RegistryError
from spp.registry.schema import Version

log = logging.getLogger(__name__)


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)  # refs written to the destination
    present: list[str] = field(default_factory=list)  # refs it already held, same content
    aliases: int = 0

    def to_dict(self) -> dict:
        return {"copied": self.copied, "present": self.present, "aliases": self.aliases}


def copy_registry(src: Registry, dst: Registry) -> CopyReport:
    """Copy everything in ``src`` into ``dst`` (see the module doc); returns what was done."""
    if src.location.display == dst.location.display or src.registry_id() == dst.registry_id():
        raise RegistryError(f"{src.location.display} and {dst.location.display} are the same registry")
    report = CopyReport()
    dst.ledger.claim(dst.registry_id())
    versions = src.list()
    for v in versions:
        _copy_blob(src, dst, v)
        created = dst.index.transact(lambda conn, v=v: _adopt(dst, conn, v))
        (report.copied if created else report.present).append(v.ref)
        if created:
            dst.ledger.record(v.name, v.version, v.sha256, v.created_at)
    counters = src.index.counters()
    with dst.index.write() as conn:
        for v in versions:
            for alias in v.aliases:
                dst.index.set_alias(conn, v.name, alias, v.version)
                report.aliases += 1
        for name, last in counters.items():  # removed numbers stay retired in the copy too
            dst.index.raise_counter(conn, name, last)
    log.info("copied %d version(s) from %s to %s", len(report.copied), src.location.display, dst.location.display)
    return report


def _copy_blob(src: Registry, dst: Registry, v: Version) -> None:
    data = src._read_checked(v)  # size and sha256 checked against the source index
    dst._put(data, v.sha256, v.ref)
    if dst.store.digest(v.sha256) != v.sha256:
        raise IntegrityError(f"{v.ref}: the copy in {dst.store.where(v.sha256)} does not hash to {v.sha256[:12]}...")


def _adopt(dst: Registry, conn, v: Version) -> bool:
    """Insert ``v`` under its own number unless the destination already has it; False if it had."""
    dst.index.lock_blobs(conn, exclusive=False)
    same_number = dst.index.row_sha(conn, v.name, version=v.version)
    same_content = dst.index.row_sha(conn, v.name, sha256=v.sha256)
    if same_number is not None or same_content is not None:
        if same_number == v.sha256:
            dst.index.set_tags(conn, v.name, v.version, v.tags)
            return False
        raise RegistryError(
            f"cannot copy {v.ref} into {dst.location.display}: it already holds "
            + (f"{v.ref} with other content" if same_number is not None else f"this content as another version of {v.name}")
        )
    dst.index.restore(conn, v)
    dst.index.set_tags(conn, v.name, v.version, v.tags)
    return True
