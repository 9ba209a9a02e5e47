"""Hub sharing, offline: the folder and card that push builds, and pull's import of such a folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spp.registry import IntegrityError, Registry, RegistryError
from spp.registry import hub
from spp.registry.store import sha256_file


def _card_metadata(folder: Path) -> dict:
    text = (folder / hub.CARD_FILE).read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def published(registry: Registry, make_artifact):
    art = make_artifact("rte", seed=7, metrics={"validation": {"accuracy": 0.75, "f1": 0.5}, "test": {"accuracy": 0.7}})
    version, _ = registry.publish(art, tags={"team": "nlp"})
    return version


def test_folder_holds_artifact_and_card(registry: Registry, published, tmp_path: Path) -> None:
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "prompt.safetensors"]
    assert sha256_file(folder / hub.ARTIFACT_FILE) == published.sha256  # byte-identical to the blob
    meta = _card_metadata(folder)
    assert meta["library_name"] == "spp"
    assert meta["base_model"] == "google/t5-base-lm-adapt"
    assert {"spp", "soft-prompt", "prompt-tuning", "rte", "superpos"} <= set(meta["tags"])
    assert meta["spp"]["sha256"] == published.sha256 and meta["spp"]["name"] == "rte"
    assert meta["spp"]["tags"] == {"team": "nlp"}
    (entry,) = meta["model-index"]
    assert entry["name"] == "rte"
    got = {(r["dataset"]["split"], m["type"]): m["value"] for r in entry["results"] for m in r["metrics"]}
    assert got == {("test", "accuracy"): 0.7, ("validation", "accuracy"): 0.75, ("validation", "f1"): 0.5}
    assert all(r["dataset"]["type"] == "aps/super_glue" for r in entry["results"])
    assert "| validation | accuracy | 0.7500 |" in (folder / hub.CARD_FILE).read_text()


@pytest.mark.parametrize("backbone", ["random:t5-small", "/models/local-t5", "./t5"])
def test_base_model_only_for_hub_ids(registry: Registry, make_artifact, tmp_path: Path, backbone: str) -> None:
    registry.publish(make_artifact("rte", seed=1, backbone=backbone))
    meta = _card_metadata(hub.build_hub_folder(registry, "rte", tmp_path / "out"))
    assert "base_model" not in meta and meta["spp"]["backbone"] == backbone


def test_import_folder_into_another_registry(registry: Registry, published, tmp_path: Path) -> None:
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "out")
    other = Registry(tmp_path / "other")
    version, created = hub.import_hub_folder(other, folder, source="me/rte-prompt@main", aliases=["prod"])
    assert created and version.ref == "rte@1" and version.sha256 == published.sha256
    assert version.tags == {"team": "nlp", "hub": "me/rte-prompt@main"} and version.aliases == ("prod",)
    assert other.verify() == []
    again, created = hub.import_hub_folder(other, folder, name="rte-hub")
    assert created and again.ref == "rte-hub@1"


def test_import_refuses_a_file_that_does_not_match_its_card(registry: Registry, published, tmp_path: Path) -> None:
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "out")
    data = bytearray((folder / hub.ARTIFACT_FILE).read_bytes())
    data[-1] ^= 1
    (folder / hub.ARTIFACT_FILE).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        hub.import_hub_folder(Registry(tmp_path / "other"), folder)


def test_import_refuses_a_card_pointing_outside_the_folder(registry: Registry, published, tmp_path: Path) -> None:
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "out")
    card = (folder / hub.CARD_FILE).read_text().replace("file: prompt.safetensors", "file: ../prompt.safetensors")
    (folder / hub.CARD_FILE).write_text(card)
    with pytest.raises(RegistryError, match="invalid artifact file"):
        hub.import_hub_folder(Registry(tmp_path / "other"), folder)


def test_import_folder_without_card(registry: Registry, published, tmp_path: Path) -> None:
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "out")
    (folder / hub.CARD_FILE).unlink()
    (folder / hub.ARTIFACT_FILE).rename(folder / "weights.safetensors")
    version, _ = hub.import_hub_folder(Registry(tmp_path / "other"), folder)
    assert version.ref == "rte@1" and version.sha256 == published.sha256
    (folder / "weights.safetensors").unlink()
    with pytest.raises(RegistryError, match="expected prompt.safetensors"):
        hub.import_hub_folder(Registry(tmp_path / "other"), folder)


def test_offline_push_and_pull_fail_in_one_line(registry: Registry, published) -> None:
    # tests run with HF_HUB_OFFLINE=1: the real HfApi / snapshot_download refuse to connect
    with pytest.raises(RegistryError, match="cannot push rte@1 to me/x") as info:
        hub.push(registry, "rte", "me/x")
    assert "\n" not in str(info.value)
    with pytest.raises(RegistryError, match="cannot download me/x@main from the Hub") as info:
        hub.pull(registry, "me/x@main")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["noslash", "a/b/c", "bad name/x", "-x/y"])
def test_bad_repo_ids(spec: str) -> None:
    with pytest.raises(RegistryError):
        hub.parse_hub_spec(spec)


def test_parse_hub_spec() -> None:
    assert hub.parse_hub_spec("me/rte") == ("me/rte", None)
    assert hub.parse_hub_spec("me/rte@v2") == ("me/rte", "v2")
