"""A shared registry's local blob cache: keyed by sha256, checked on every read, kept across
restarts, repaired from the store when it is corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest

from spp.registry import IntegrityError, Registry


def test_the_cache_is_reused_across_restarts_and_verified(pg_registry_url: str, tmp_path: Path, make_artifact) -> None:
    cache = tmp_path / "cache"
    publisher = Registry(pg_registry_url, cache_dir=tmp_path / "publisher-cache")
    v, _ = publisher.publish(make_artifact("rte", seed=1))
    stored = publisher.store.path(v.sha256)

    first = Registry(pg_registry_url, cache_dir=cache)
    assert first.load("rte@1")[0] == v
    cached = cache / "blobs" / v.sha256[:2] / f"{v.sha256}.safetensors"
    assert cached.read_bytes() == stored.read_bytes()
    first.close()

    stored.unlink()  # the store loses it: a restarted process still has its verified copy
    restarted = Registry(pg_registry_url, cache_dir=cache)
    assert restarted.load("rte@1")[0] == v
    assert restarted.verify()[0][1].startswith("blob missing")  # verify checks the store, not the cache

    cached.write_bytes(cached.read_bytes()[:-1] + b"\x00")  # a corrupt cache entry is never used...
    with pytest.raises(IntegrityError, match="rte@1: blob missing"):
        restarted.load("rte@1")
    publisher.publish(make_artifact("rte", seed=1))  # ...and is replaced from the repaired store
    assert restarted.load("rte@1")[0] == v and cached.read_bytes() == stored.read_bytes()
