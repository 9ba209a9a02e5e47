"""One canonical writer: a file spp writes is stored byte for byte, and its registry sha256 is
its own sha256sum; registries written by spp 0.1.0 still load, verify and deduplicate."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spp.prompts.artifact import artifact_bytes, canonical_bytes, decode, load_artifact
from spp.prompts.tasks import get_task
from spp.prompts.train import TrainConfig, train_to_artifact
from spp.registry import Registry

LEGACY = Path(__file__).parent / "data" / "legacy-0.1.0"
LEGACY_SHA = "5fc986a7a3ab43517646413a6097da6349a6ece917285ee090e19f289afccc35"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_trained_file_is_stored_byte_for_byte(tiny_backbone, demo_data, tmp_path) -> None:
    config = TrainConfig(max_steps=2, batch_size=8, eval_every=2, seed=1)
    _, path = train_to_artifact(
        tiny_backbone, get_task(demo_data["sentiment"]), "superpos", {"n_tokens": 3, "m": 8}, config,
        out=tmp_path / "sentiment.safetensors", max_eval=16,
    )
    data = path.read_bytes()
    with Registry(tmp_path / "registry") as reg:
        version, created = reg.publish(path)
        assert created and version.sha256 == sha256(data)
        assert reg.blob_path(version).read_bytes() == data
        assert reg.verify() == []


def test_canonical_bytes_is_a_fixed_point_of_the_writer(make_artifact) -> None:
    data = artifact_bytes(make_artifact(seed=3))
    assert canonical_bytes(data) == data
    assert canonical_bytes(canonical_bytes(data)) == data


def test_another_writers_file_is_canonicalised_with_the_same_content(make_artifact, tmp_path) -> None:
    art = make_artifact(seed=4)
    foreign = tmp_path / "foreign.safetensors"  # safetensors' own writer: hash-ordered metadata
    save_file({"prompt": art.prompt}, str(foreign), metadata=art.meta.to_header())
    with Registry(tmp_path / "registry") as reg:
        version, _ = reg.publish(foreign)
        stored = reg.blob_path(version).read_bytes()
        assert version.sha256 == sha256(stored) and canonical_bytes(stored) == stored
        _, loaded = reg.load(version.ref)
    assert torch.equal(loaded.prompt, art.prompt) and loaded.meta == art.meta


@pytest.fixture
def legacy_registry(tmp_path: Path) -> Path:
    """The registry spp 0.1.0 wrote (index dumped as SQL, blob bytes as written then)."""
    root = tmp_path / "legacy"
    (root / "blobs" / LEGACY_SHA[:2]).mkdir(parents=True)
    shutil.copy(LEGACY / f"{LEGACY_SHA}.safetensors", root / "blobs" / LEGACY_SHA[:2] / f"{LEGACY_SHA}.safetensors")
    with sqlite3.connect(root / "index.sqlite") as conn:
        conn.executescript((LEGACY / "index.sql").read_text())
    return root


def test_a_legacy_registry_loads_and_verifies(legacy_registry: Path) -> None:
    with Registry(legacy_registry) as reg:
        version, art = reg.load("rte@prod")
        assert version.ref == "rte@1" and version.sha256 == LEGACY_SHA and version.tags == {"team": "nlp"}
        assert art.prompt.shape == (2, 8) and art.meta.dataset["note"] == "naïve — ünïcode"
        assert reg.verify() == []


def test_the_file_the_old_trainer_wrote_publishes_as_its_existing_version(legacy_registry: Path) -> None:
    old_file = (LEGACY / "trained-file.safetensors").read_bytes()
    assert sha256(old_file) != LEGACY_SHA  # the old defect: two writers, two byte forms
    assert canonical_bytes(old_file) == (LEGACY / f"{LEGACY_SHA}.safetensors").read_bytes()
    with Registry(legacy_registry) as reg:
        version, created = reg.publish(old_file)
        assert not created and version.ref == "rte@1"
    assert decode(old_file).meta == load_artifact(LEGACY / "trained-file.safetensors").meta
