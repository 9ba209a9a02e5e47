"""Publishing, validation, resolution, aliases, tags, deprecation, removal and gc."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from spp.prompts.artifact import save_artifact
from spp.registry import NotFoundError, PublishError, Registry, RegistryError


def test_publish_resolve_load_round_trip(registry: Registry, artifact_file, make_artifact) -> None:
    path = artifact_file("rte", n=5, d=16, seed=1)
    version, created = registry.publish(path, aliases=["prod"], tags={"team": "nlp"})
    assert created and version.ref == "rte@1"
    assert (version.task, version.method, version.n_tokens, version.d_model) == ("rte", "superpos", 5, 16)
    assert version.aliases == ("prod",) and version.tags == {"team": "nlp"}
    assert version.main_metric == pytest.approx(0.501)
    assert registry.store.path(version.sha256).stat().st_size == version.size
    for ref in ("rte", "rte@1", "rte@latest", "rte@prod"):
        assert registry.resolve(ref) == version
    loaded, artifact = registry.load("rte@prod")
    assert loaded == version
    assert torch.equal(artifact.prompt, make_artifact("rte", n=5, d=16, seed=1).prompt)
    assert artifact.meta == make_artifact("rte", n=5, d=16, seed=1).meta


def test_versions_count_per_name(registry: Registry, make_artifact) -> None:
    refs = [registry.publish(make_artifact(task, seed=i))[0].ref for i, task in enumerate(["rte", "rte", "sst2", "rte"])]
    assert refs == ["rte@1", "rte@2", "sst2@1", "rte@3"]
    assert registry.names() == ["rte", "sst2"]
    assert registry.resolve("rte").version == 3
    named, _ = registry.publish(make_artifact("rte", seed=9), name="rte-large")
    assert named.ref == "rte-large@1" and named.task == "rte"


def test_identical_content_returns_existing_version(registry: Registry, make_artifact, tmp_path: Path) -> None:
    art = make_artifact("rte", seed=3)
    first, created = registry.publish(art)
    # The same content saved twice: safetensors writes metadata keys in a different order each
    # time, so the files may differ byte-wise; the registry still sees one content.
    files = [save_artifact(art, tmp_path / f"copy{i}.safetensors") for i in range(3)]
    again = [registry.publish(f) for f in files] + [registry.publish(art, aliases=["prod"])]
    assert created and all(v.ref == first.ref and not c for v, c in again)
    assert again[-1][0].aliases == ("prod",)  # aliases still apply to the existing version
    assert len(registry.list()) == 1 and len(list(registry.store.iter_blobs())) == 1


def test_same_content_under_two_names_shares_one_blob(registry: Registry, make_artifact) -> None:
    a, _ = registry.publish(make_artifact("rte", seed=4))
    b, created = registry.publish(make_artifact("rte", seed=4), name="rte-copy")
    assert created and a.sha256 == b.sha256 and b.ref == "rte-copy@1"
    registry.remove("rte@1")
    assert registry.store.path(b.sha256).is_file()  # still referenced by rte-copy@1
    registry.remove("rte-copy@1")
    assert not registry.store.path(b.sha256).exists()


def _raw(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    return st_save(tensors, metadata=meta)


def _invalid_files(tmp_path: Path, make_artifact) -> dict[str, tuple[Path, str]]:
    good = make_artifact("rte", n=4, d=16)
    header = good.meta.to_header()
    missing = {k: v for k, v in header.items() if k != "fingerprint"}
    cases = {
        "not-safetensors": (b"this is not a safetensors file at all", "not a valid safetensors"),
        "empty": (b"", "not a valid safetensors"),
        "truncated": (_raw({"prompt": good.prompt}, header)[:-7], "not a valid safetensors"),
        "missing-metadata": (_raw({"prompt": good.prompt}, missing), "missing required metadata: fingerprint"),
        "no-metadata": (_raw({"prompt": good.prompt}, {}), "missing required metadata"),
        "wrong-shape": (_raw({"prompt": torch.zeros(3, 16)}, header), "does not match n_tokens x d_model"),
        "not-2d": (_raw({"prompt": torch.zeros(4, 16, 1)}, header), "must be 2-D"),
        "nan": (_raw({"prompt": good.prompt.clone().index_fill_(0, torch.tensor([1]), float("nan"))}, header), "NaN"),
        "inf": (_raw({"prompt": good.prompt.clone().index_fill_(0, torch.tensor([2]), float("inf"))}, header), "NaN or infinite"),
        "no-prompt": (_raw({"other": good.prompt}, header), "no 'prompt' tensor"),
        "int-prompt": (_raw({"prompt": torch.zeros(4, 16, dtype=torch.int32)}, header), "floating-point"),
        "nan-metric": (_raw({"prompt": good.prompt}, header | {"metrics": '{"test": {"acc": NaN}}'}), "NaN or infinite"),
        "bad-metrics": (_raw({"prompt": good.prompt}, header | {"metrics": '{"test": 0.5}'}), "split -> metric name"),
    }
    out = {}
    for key, (data, fragment) in cases.items():
        path = tmp_path / f"{key}.safetensors"
        path.write_bytes(data)
        out[key] = (path, fragment)
    return out


@pytest.mark.parametrize(
    "case",
    ["not-safetensors", "empty", "truncated", "missing-metadata", "no-metadata", "wrong-shape", "not-2d", "nan",
     "inf", "no-prompt", "int-prompt", "nan-metric", "bad-metrics"],
)
def test_publish_rejects_invalid_files(registry: Registry, tmp_path: Path, make_artifact, case: str) -> None:
    path, fragment = _invalid_files(tmp_path, make_artifact)[case]
    with pytest.raises(PublishError, match=fragment) as info:
        registry.publish(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert registry.list() == [] and list(registry.store.iter_blobs()) == []  # nothing stored


@pytest.mark.parametrize(
    ("name", "fragment"), [("a/b", "path separators"), ("..", "'..'"), ("x..y", "'..'"), ("a\\b", "path separators"), ("r@1", "'@'")]
)
def test_publish_rejects_bad_names(registry: Registry, make_artifact, name: str, fragment: str) -> None:
    with pytest.raises(PublishError, match=fragment):
        registry.publish(make_artifact(), name=name)
    with pytest.raises(PublishError, match=fragment):  # a task name is the default name
        registry.publish(make_artifact(task=name))
    assert registry.list() == []


def test_publish_rejects_missing_file_and_bad_alias(registry: Registry, tmp_path: Path, make_artifact) -> None:
    with pytest.raises(PublishError, match="no such file"):
        registry.publish(tmp_path / "nope.safetensors")
    with pytest.raises(PublishError, match="reserved"):
        registry.publish(make_artifact(), aliases=["latest"])
    with pytest.raises(PublishError, match="tag key"):
        registry.publish(make_artifact(), tags={"bad key": "x"})
    assert registry.list() == []


def test_not_found_messages_list_what_exists(registry: Registry, make_artifact) -> None:
    registry.publish(make_artifact("rte", seed=1), aliases=["prod"])
    registry.publish(make_artifact("sst2", seed=2))
    with pytest.raises(NotFoundError, match="no prompt named 'cola'.*known names: rte, sst2"):
        registry.resolve("cola")
    with pytest.raises(NotFoundError, match="rte has no version 7; its versions: 1"):
        registry.resolve("rte@7")
    with pytest.raises(NotFoundError, match="rte has no alias 'staging'; its aliases: prod"):
        registry.resolve("rte@staging")
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        registry.remove_alias("rte", "staging")


def test_deprecated_versions_are_skipped_by_bare_name(registry: Registry, make_artifact) -> None:
    for seed in range(3):
        registry.publish(make_artifact("rte", seed=seed))
    registry.set_alias("rte@3", "prod")
    assert registry.deprecate("rte").ref == "rte@3"  # bare name: the latest non-deprecated
    assert registry.resolve("rte").ref == "rte@2"
    assert registry.resolve("rte@3").deprecated  # explicit version still resolves
    assert registry.resolve("rte@prod").ref == "rte@3"  # so does an alias
    assert [v.ref for v in registry.list(include_deprecated=False)] == ["rte@1", "rte@2"]
    registry.deprecate("rte@1"), registry.deprecate("rte@2")
    with pytest.raises(NotFoundError, match=r"every version of rte is deprecated.*rte@3"):
        registry.resolve("rte")
    assert not registry.deprecate("rte@2", deprecated=False).deprecated
    assert registry.resolve("rte").ref == "rte@2"


def test_aliases_move_and_block_removal(registry: Registry, make_artifact) -> None:
    registry.publish(make_artifact("rte", seed=1))
    registry.publish(make_artifact("rte", seed=2))
    assert registry.set_alias("rte@1", "prod").aliases == ("prod",)
    moved = registry.set_alias("rte@2", "prod")
    assert moved.aliases == ("prod",) and registry.resolve("rte@1").aliases == ()
    with pytest.raises(RegistryError, match="rte@2 is aliased as rte@prod") as info:
        registry.remove("rte@2")
    assert "\n" not in str(info.value)
    assert registry.resolve("rte@2")  # still there
    with pytest.raises(RegistryError, match="explicit version"):
        registry.remove("rte")
    removed = registry.remove("rte@prod", force=True)
    assert removed.ref == "rte@2"
    with pytest.raises(NotFoundError):
        registry.resolve("rte@prod")
    new, _ = registry.publish(make_artifact("rte", seed=3))
    assert new.version == 3  # a removed number is never handed out again


@pytest.mark.parametrize("ref", ["rte", "rte@latest", "rte@2", "rte@prod"])
def test_resolve_without_details_names_the_same_version(registry: Registry, make_artifact, ref: str) -> None:
    """details=False (the server's per-request lookup): the same version and blob, and no
    aliases or tags (not fetched); unknown references still fail with the full message."""
    registry.publish(make_artifact("rte", seed=1))
    registry.publish(make_artifact("rte", seed=2), aliases=["prod"])
    registry.tag("rte@2", {"team": "nlp"})
    full, lean = registry.resolve(ref), registry.resolve(ref, details=False)
    assert full.aliases == ("prod",) and full.tags == {"team": "nlp"}
    assert full.ref == "rte@2" and (lean.ref, lean.sha256, lean.size) == (full.ref, full.sha256, full.size)
    assert lean.aliases == () and lean.tags == {}
    with pytest.raises(NotFoundError, match="its aliases: prod"):
        registry.resolve("rte@staging", details=False)


def test_alias_moves_are_atomic_for_readers(registry: Registry, make_artifact) -> None:
    """A reader resolving rte@prod while it flips between two versions always gets one of them."""
    v1, _ = registry.publish(make_artifact("rte", seed=1), aliases=["prod"])
    v2, _ = registry.publish(make_artifact("rte", seed=2))
    seen, errors, stop = set(), [], threading.Event()

    def reader() -> None:
        reg = Registry(registry.location)
        while not stop.is_set():
            try:
                seen.add(reg.resolve("rte@prod").version)
            except Exception as exc:  # noqa: BLE001 - any failure is the bug under test
                errors.append(exc)
        reg.close()

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        registry.set_alias((v1 if i % 2 else v2).ref, "prod")
    stop.set()
    thread.join()
    assert errors == [] and seen <= {1, 2} and seen


def test_tags_set_filter_and_remove(registry: Registry, make_artifact) -> None:
    registry.publish(make_artifact("rte", seed=1), tags={"team": "nlp"})
    registry.publish(make_artifact("rte", seed=2, method="ept"))
    registry.publish(make_artifact("sst2", seed=3, backbone="random:t5-small"), tags={"team": "nlp", "stage": "dev"})
    assert [v.ref for v in registry.list(tags={"team": "nlp"})] == ["rte@1", "sst2@1"]
    assert [v.ref for v in registry.list(tags={"team": "nlp", "stage": "dev"})] == ["sst2@1"]
    assert [v.ref for v in registry.list(method="ept")] == ["rte@2"]
    assert [v.ref for v in registry.list(task="rte", method="superpos")] == ["rte@1"]
    assert [v.ref for v in registry.list(backbone="random:t5-small")] == ["sst2@1"]
    assert [v.ref for v in registry.list(name="sst2")] == ["sst2@1"]
    assert registry.tag("sst2@1", {"stage": "prod", "team": ""}).tags == {"stage": "prod"}
    assert registry.list(tags={"team": "nlp"})[0].ref == "rte@1"


def test_gc_removes_orphans_only(registry: Registry, make_artifact) -> None:
    kept, _ = registry.publish(make_artifact("rte", seed=1))
    gone, _ = registry.publish(make_artifact("rte", seed=2))
    orphan = registry.store.put(b"orphan bytes", "00" * 32)
    stale = registry.store.tmp_dir / "dead.tmp"
    stale.write_bytes(b"x")
    registry.remove(gone.ref)  # rm deletes its unshared blob itself
    assert not registry.store.path(gone.sha256).exists()
    assert registry.gc() == [orphan]  # the young temp file may belong to a live writer
    assert set(registry.gc(temp_grace_s=0)) == {stale}
    assert registry.store.path(kept.sha256).is_file() and registry.verify() == []
    assert registry.gc() == []


def test_lineage(registry: Registry, make_artifact) -> None:
    registry.publish(make_artifact("rte", seed=1))
    registry.publish(make_artifact("cb", seed=2, parent="rte@1"))
    registry.publish(make_artifact("copa", seed=3, parent="cb@1"))
    assert registry.lineage("copa") == {"ancestors": ["cb@1", "rte@1"], "children": []}
    assert registry.lineage("rte@1") == {"ancestors": [], "children": ["cb@1"]}


def test_registry_path_must_be_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(RegistryError, match="not a directory"):
        Registry(file)
