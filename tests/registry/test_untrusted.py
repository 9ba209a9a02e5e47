"""Everything read from elsewhere is untrusted: templates restricted to plain {field}
placeholders, and reads bounded to regular files of at most MAX_ARTIFACT_BYTES."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spp.prompts.artifact import artifact_bytes, save_artifact
from spp.prompts.artifact.files import MAX_ARTIFACT_BYTES, FileReadError, read_bounded
from spp.registry import IntegrityError, PublishError, Registry, RegistryError
from spp.registry import hub
from spp.registry.peft_io import PeftError, export_peft, import_peft

HOSTILE = ["{review:>300000000}", "{review.__class__}"]


def _spec(template: str) -> dict:
    return {"name": "rte", "template": template, "label_words": ["yes", "no"]}


@pytest.fixture
def hostile_file(make_artifact, unchecked_templates, tmp_path: Path):
    """An artifact file whose template an older spp (or another writer) let through."""

    def make(template: str) -> Path:
        with unchecked_templates():
            return save_artifact(make_artifact("rte", task_spec=_spec(template)), tmp_path / "hostile.safetensors")

    return make


@pytest.mark.parametrize("template", HOSTILE)
def test_publish_refuses_a_hostile_template(registry: Registry, hostile_file, template: str) -> None:
    with pytest.raises(PublishError, match=r"cannot publish .*hostile.safetensors: .*template placeholder") as info:
        registry.publish(hostile_file(template))
    assert template in str(info.value) and "\n" not in str(info.value)
    assert registry.list() == [] and list(registry.store.iter_blobs()) == []


@pytest.mark.parametrize("template", HOSTILE)
def test_load_refuses_a_hostile_template_already_in_a_registry(registry: Registry, hostile_file, unchecked_templates,
                                                                template: str) -> None:
    path = hostile_file(template)
    with unchecked_templates():  # a registry filled by an older spp
        version, _ = registry.publish(path)
    with pytest.raises(IntegrityError, match=r"rte@1: stored artifact is unreadable: .*template placeholder"):
        registry.load(version)


@pytest.mark.parametrize("template", HOSTILE)
def test_pull_refuses_a_hostile_template(registry: Registry, hostile_file, make_artifact, tmp_path: Path,
                                         template: str) -> None:
    registry.publish(make_artifact("rte"))
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "repo")
    hostile = hostile_file(template).read_bytes()
    (folder / hub.ARTIFACT_FILE).write_bytes(hostile)
    card = (folder / hub.CARD_FILE).read_text()
    (folder / hub.CARD_FILE).write_text(card.replace(registry.resolve("rte").sha256, hub.sha256_bytes(hostile)))
    other = Registry(tmp_path / "other")
    with pytest.raises(PublishError, match="template placeholder"):
        hub.import_hub_folder(other, folder, source="me/x")
    assert other.list() == []


@pytest.mark.parametrize("template", HOSTILE)
def test_import_peft_refuses_a_hostile_template(make_artifact, unchecked_templates, tmp_path: Path, template: str) -> None:
    with unchecked_templates():
        export_peft(make_artifact("rte", task_spec=_spec(template)), tmp_path / "adapter")
    with pytest.raises(PeftError, match="cannot import the adapter: .*template placeholder"):
        import_peft(tmp_path / "adapter")
    spec_file = tmp_path / "task.json"
    spec_file.write_text(json.dumps(_spec(template)))
    export_peft(make_artifact("rte"), tmp_path / "clean")
    with pytest.raises(RegistryError, match="task spec file .*template placeholder"):
        import_peft(tmp_path / "clean", task=str(spec_file))


# ------------------------------------------------------------------------------ bounded reads
def test_read_bounded_refuses_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a blocking open would hang here
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as fh:
        fh.truncate(MAX_ARTIFACT_BYTES + 1)  # sparse: costs no disk, and is never read
    small = tmp_path / "small"
    small.write_bytes(b"12345")
    cases = {"/dev/zero": "not a regular file", str(fifo): "not a regular file", str(tmp_path): "a directory",
             str(tmp_path / "missing"): "no such file", str(big): f"more than the maximum of {MAX_ARTIFACT_BYTES}"}
    for path, reason in cases.items():
        with pytest.raises(FileReadError, match=reason):
            read_bounded(path)
    assert read_bounded(small, limit=5) == b"12345"
    with pytest.raises(FileReadError, match="5 bytes, more than the maximum of 4"):
        read_bounded(small, limit=4)


@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "big"])
def test_publish_refuses_devices_fifos_and_huge_files_at_once(registry: Registry, tmp_path: Path, source: str) -> None:
    path = Path(source)
    if source == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif source == "big":
        path = tmp_path / "big.safetensors"
        with open(path, "wb") as fh:
            fh.truncate(MAX_ARTIFACT_BYTES + 1)
    with pytest.raises(PublishError, match=f"cannot publish {path}: (not a regular file|.*more than the maximum)"):
        registry.publish(path)
    with pytest.raises(PublishError, match="more than the maximum"):
        registry.publish(b"\0" * (MAX_ARTIFACT_BYTES + 1))


def test_pull_and_import_peft_refuse_non_regular_files(registry: Registry, make_artifact, tmp_path: Path) -> None:
    registry.publish(make_artifact("rte"))
    folder = hub.build_hub_folder(registry, "rte", tmp_path / "repo")
    (folder / hub.ARTIFACT_FILE).unlink()
    os.mkfifo(folder / hub.ARTIFACT_FILE)
    with pytest.raises(RegistryError, match="prompt.safetensors: not a regular file"):
        hub.import_hub_folder(Registry(tmp_path / "other"), folder)
    (folder / hub.CARD_FILE).unlink()
    (folder / hub.CARD_FILE).symlink_to("/dev/zero")
    with pytest.raises(RegistryError, match="README.md: not a regular file"):
        hub.import_hub_folder(Registry(tmp_path / "other"), folder)
    adapter = export_peft(make_artifact("rte"), tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.safetensors").symlink_to("/dev/zero")
    with pytest.raises(PeftError, match="adapter_model.safetensors: not a regular file"):
        import_peft(adapter)
    (adapter / "adapter_config.json").unlink()
    os.mkfifo(adapter / "adapter_config.json")
    with pytest.raises(PeftError, match="adapter_config.json: not a regular file"):
        import_peft(adapter)


def test_artifact_bytes_of_a_clean_artifact_still_publish(registry: Registry, make_artifact) -> None:
    version, created = registry.publish(artifact_bytes(make_artifact("rte")))
    assert created and version.ref == "rte@1"
