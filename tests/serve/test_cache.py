"""The prompt cache: LRU by (name, version), registry checks, alias moves."""

from __future__ import annotations

import pytest
import torch

from spp.registry import NotFoundError, RegistryError
from spp.serve.cache import PromptCache
from spp.serve.errors import PromptUnavailableError


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def cache(world, tiny_backbone, events):
    c = PromptCache(world.registry, tiny_backbone, capacity=2, on_event=events.append)
    yield c
    c.close()


def test_a_miss_loads_a_device_tensor_with_its_spec_and_labels(cache, world, events):
    entry = cache.get_sync("pair@prod")
    assert entry.ref == "pair@1" and events == ["miss"]
    assert torch.equal(entry.prompt, world.artifacts["pair"].prompt)
    assert entry.prompt.shape == (8, 64) and entry.prompt.dtype == torch.float32
    assert entry.spec.fields == ("a", "b") and entry.labels.words == ("same", "different", "unsure")
    assert all(ids[-1] == 1 for ids in entry.labels.token_ids)  # each label ends in EOS


def test_hits_misses_and_lru_evictions(cache, events):
    a = cache.get_sync("sentiment")
    assert cache.get_sync("sentiment@1") is a  # same (name, version) through another reference
    cache.get_sync("topic")
    cache.get_sync("sentiment")  # refresh: topic is now the least recently used
    cache.get_sync("pair")  # evicts topic
    assert events == ["miss", "hit", "miss", "hit", "miss", "eviction"]
    assert sorted(cache.keys()) == [("pair", 1), ("sentiment", 1)]
    cache.get_sync("topic")
    assert events[-2:] == ["miss", "eviction"] and len(cache) == 2


def test_an_alias_move_resolves_to_the_new_version_at_once(cache, world, tiny_backbone, kit):
    assert cache.get_sync("topic@prod").ref == "topic@1"
    world.publish(kit.make_artifact(tiny_backbone, "topic", seed=42))
    world.registry.set_alias("topic@2", "prod")
    entry = cache.get_sync("topic@prod")
    assert entry.ref == "topic@2" and entry.prompt.shape[0] == 5


def test_unknown_and_malformed_references_raise_registry_errors(cache):
    with pytest.raises(NotFoundError, match="known names"):
        cache.get_sync("nope")
    with pytest.raises(RegistryError):
        cache.get_sync("a@b@c")


def test_a_corrupt_blob_is_refused_and_never_cached(cache, world, kit, events):
    kit.corrupt_blob(world.registry, "topic")
    with pytest.raises(PromptUnavailableError, match="topic@1.*sha256"):
        cache.get_sync("topic")
    assert len(cache) == 0
    assert cache.get_sync("pair").ref == "pair@1"


@pytest.mark.parametrize("kwargs, message", [
    ({"fingerprint": "sha256:" + "f" * 64}, "different backbone"),
    ({"d_model": 48}, "d_model 48"),
])
def test_a_prompt_from_another_backbone_is_refused(cache, world, tiny_backbone, kit, kwargs, message):
    world.publish(kit.make_artifact(tiny_backbone, "topic", **kwargs), name="alien")
    with pytest.raises(PromptUnavailableError, match=message):
        cache.get_sync("alien")


def test_an_artifact_without_a_task_spec_is_refused(cache, world, tiny_backbone, kit):
    art = kit.make_artifact(tiny_backbone, "topic")
    art.meta.task_spec = {}
    world.publish(art, name="bare")
    with pytest.raises(PromptUnavailableError, match="no task spec"):
        cache.get_sync("bare")
