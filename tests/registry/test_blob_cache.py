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


def test_an_unverified_blob_path_reads_nothing_a_verified_one_repairs(
    pg_registry_url: str, tmp_path: Path, make_artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """blob_path(verify=False) is the server's listing path: an existing cached copy of the right
    size is returned without reading or hashing it; the default path re-checks and repairs."""
    import spp.registry.core as core

    publisher = Registry(pg_registry_url, cache_dir=tmp_path / "publisher-cache")
    v, _ = publisher.publish(make_artifact("rte", seed=1))
    reader = Registry(pg_registry_url, cache_dir=tmp_path / "cache")
    cached = reader.blob_path(v, verify=False)  # not cached yet: fetched and checked
    assert cached.read_bytes() == publisher.store.path(v.sha256).read_bytes()

    hashed: list[int] = []
    real = core.sha256_bytes
    monkeypatch.setattr(core, "sha256_bytes", lambda data: hashed.append(len(data)) or real(data))
    for _ in range(3):
        assert reader.blob_path(v, verify=False) == cached
    assert hashed == []

    good = cached.read_bytes()
    cached.write_bytes(good[:-1] + b"\x00")  # same size, corrupt
    assert reader.blob_path(v, verify=False) == cached and hashed == []  # the caller's stat check catches it
    assert reader.blob_path(v) == cached and cached.read_bytes() == good and hashed
