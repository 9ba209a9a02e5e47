"""Shared fixtures: everything offline, tiny, and built by the tests themselves."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretrained-on-synthetic-tasks T5 saved as a local model directory (see spp.prompts.demo)."""
    from spp.prompts.demo.toy import make_tiny_backbone_dir

    return make_tiny_backbone_dir(tmp_path_factory.mktemp("tiny-t5") / "model")


@pytest.fixture(scope="session")
def tiny_backbone(tiny_backbone_dir: Path):
    """The tiny backbone loaded through the real local-directory path, frozen, CPU, float32."""
    from spp.prompts.backbone import load_backbone

    return load_backbone(str(tiny_backbone_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data of the two demo tasks: {task name: path of its task.json spec}, files beside it."""
    from spp.prompts.demo.toy import TASKS, write_demo_task

    root = tmp_path_factory.mktemp("demo-data")
    return {name: write_demo_task(root, name, n_train=200, n_eval=100) for name in TASKS}


@pytest.fixture
def spp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry directory, also exported as $SPP_HOME."""
    home = tmp_path / "spp-home"
    monkeypatch.setenv("SPP_HOME", str(home))
    return home
