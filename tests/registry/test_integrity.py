"""Corrupt, truncated and missing blobs: load names the reference, verify reports, publish repairs."""

from __future__ import annotations

import pytest

from spp.registry import IntegrityError, Registry


def _flip_bit(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_bit_flip_is_caught_by_load_and_verify(registry: Registry, make_artifact) -> None:
    good, _ = registry.publish(make_artifact("rte", seed=1))
    bad, _ = registry.publish(make_artifact("rte", seed=2), aliases=["prod"])
    _flip_bit(registry.store.path(bad.sha256), -3)  # inside the prompt tensor's bytes
    with pytest.raises(IntegrityError, match=r"^rte@2: blob sha256 mismatch") as info:
        registry.load("rte@prod")
    assert "\n" not in str(info.value)
    assert registry.load("rte@1")[0] == good  # other versions are unaffected
    assert [(v.ref, reason.split(" (")[0]) for v, reason in registry.verify()] == [("rte@2", "blob sha256 mismatch")]


def test_truncated_blob(registry: Registry, make_artifact) -> None:
    version, _ = registry.publish(make_artifact("rte", seed=1))
    path = registry.store.path(version.sha256)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=rf"^rte@1: blob truncated .*{version.size - 100} bytes, expected {version.size}"):
        registry.load("rte")
    assert [v.ref for v, _ in registry.verify()] == ["rte@1"]


def test_missing_blob(registry: Registry, make_artifact) -> None:
    version, _ = registry.publish(make_artifact("rte", seed=1))
    registry.store.path(version.sha256).unlink()
    with pytest.raises(IntegrityError, match="^rte@1: blob missing"):
        registry.load(version)
    assert registry.verify()[0][1].startswith("blob missing")


def test_verify_names_every_version_sharing_a_corrupt_blob(registry: Registry, make_artifact) -> None:
    registry.publish(make_artifact("rte", seed=1))
    shared, _ = registry.publish(make_artifact("rte", seed=1), name="rte-copy")
    _flip_bit(registry.store.path(shared.sha256), 100)
    assert sorted(v.ref for v, _ in registry.verify()) == ["rte-copy@1", "rte@1"]


def test_publishing_again_repairs_a_corrupt_blob(registry: Registry, make_artifact) -> None:
    art = make_artifact("rte", seed=1)
    version, _ = registry.publish(art)
    _flip_bit(registry.store.path(version.sha256), -1)
    again, created = registry.publish(art)
    assert not created and again == version
    assert registry.verify() == [] and registry.load("rte")[0] == version
