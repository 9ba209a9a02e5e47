"""Registry fixtures: artifacts built directly (no training) and empty registries."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from spp.prompts.artifact import Artifact, ArtifactMeta, save_artifact
from spp.registry import Registry

FINGERPRINT = "sha256:" + "ab" * 32


def build_artifact(task: str = "rte", *, n: int = 4, d: int = 16, seed: int = 0, **meta: Any) -> Artifact:
    """A valid artifact with a seeded random prompt; ``meta`` overrides metadata fields."""
    gen = torch.Generator().manual_seed(seed)
    fields: dict[str, Any] = dict(
        task=task, method="superpos", backbone="google/t5-base-lm-adapt", fingerprint=FINGERPRINT,
        d_model=d, n_tokens=n, metrics={"validation": {"accuracy": 0.5 + seed / 1000}},
        dataset={"id": "aps/super_glue", "config": task},
    )
    fields.update(meta)
    return Artifact(prompt=torch.randn(n, d, generator=gen), meta=ArtifactMeta(**fields))


@pytest.fixture
def make_artifact() -> Callable[..., Artifact]:
    return build_artifact


@pytest.fixture
def artifact_file(tmp_path: Path) -> Callable[..., Path]:
    """Save a built artifact to a file and return its path."""
    counter = iter(range(10**6))

    def make(task: str = "rte", **kwargs: Any) -> Path:
        return save_artifact(build_artifact(task, **kwargs), tmp_path / "files" / f"{task}-{next(counter)}.safetensors")

    return make


@pytest.fixture(params=["path", "spp_home", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """An empty registry on each backend: a directory opened by explicit path or found through
    $SPP_HOME, and a shared registry (a real PostgreSQL index + a file:// blob store).

    Tests reach the stored blob files through ``registry.store.path(sha)``: both backends here
    keep blobs in a local directory (the file:// store), so corruption tests corrupt the store
    itself, not the shared registry's local cache."""
    root = tmp_path / "registry"
    monkeypatch.delenv("SPP_REGISTRY", raising=False)
    if request.param == "postgres":
        monkeypatch.setenv("SPP_BLOB_CACHE", str(tmp_path / "cache"))
        reg = Registry(request.getfixturevalue("pg_registry_url"))
        assert reg.location.shared and reg.root is None
    elif request.param == "path":
        monkeypatch.delenv("SPP_HOME", raising=False)
        reg = Registry(root)
        assert reg.root == root
    else:
        monkeypatch.setenv("SPP_HOME", str(root))
        reg = Registry()
        assert reg.root == root
    yield reg
    reg.close()
