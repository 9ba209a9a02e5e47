"""A foreign PEFT adapter names the model it was trained on: importing it with another backbone
(whose fingerprint the artifact would carry) is refused unless the user overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spp.registry import Registry
from spp.registry.peft_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PeftError, import_peft, same_model


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained T5 with a byte tokenizer saved as a local directory (no training: fast)."""
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    from spp.prompts.demo.toy import tiny_config

    out = tmp_path_factory.mktemp("random-t5")
    tok = ByT5Tokenizer()
    T5ForConditionalGeneration(tiny_config(len(tok), d_model=16, layers=1)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backbone(random_dir: Path):
    from spp.prompts.backbone import load_backbone

    return load_backbone(str(random_dir), device="cpu")


def _adapter(folder: Path, base: str | None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": 3, "token_dim": 16,
              "base_model_name_or_path": base}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config))
    save_file({"prompt_embeddings": torch.randn(6, 16)}, str(folder / ADAPTER_WEIGHTS))
    return folder


def test_an_adapter_for_another_base_model_is_refused_unless_overridden(backbone, tmp_path: Path) -> None:
    adapter = _adapter(tmp_path / "flan", "google/flan-t5-base")
    with pytest.raises(PeftError, match=r"trained on 'google/flan-t5-base', not on the backbone .*--allow-base-mismatch"):
        import_peft(adapter, task="sst2", backbone=backbone)
    art = import_peft(adapter, task="sst2", backbone=backbone, allow_base_mismatch=True)
    assert art.meta.fingerprint == backbone.fingerprint and art.meta.backbone == backbone.name


def test_the_same_base_model_or_none_recorded_imports(backbone, random_dir: Path, tmp_path: Path) -> None:
    for i, base in enumerate([str(random_dir), str(random_dir) + "/", None]):
        art = import_peft(_adapter(tmp_path / str(i), base), task="sst2", backbone=backbone)
        assert art.meta.n_tokens == 3 and art.meta.fingerprint == backbone.fingerprint


def test_same_model() -> None:
    assert same_model("google/T5-base-lm-adapt", "google/t5-base-lm-adapt/")
    assert not same_model("google/t5-base-lm-adapt", "random:google/t5-base-lm-adapt")  # random weights
    assert not same_model("google/flan-t5-base", "google/t5-base-lm-adapt")


def test_cli_refuses_in_one_line_and_the_flag_overrides(random_dir: Path, tmp_path: Path) -> None:
    from spp.cli.main import app

    adapter = _adapter(tmp_path / "flan", "google/flan-t5-base")
    argv = ["import-peft", str(adapter), "--task", "sst2", "--backbone", str(random_dir),
            "--registry", str(tmp_path / "reg")]
    refused = CliRunner().invoke(app, argv)
    assert refused.exit_code == 2 and "trained on 'google/flan-t5-base'" in refused.output
    assert "Traceback" not in refused.output
    assert CliRunner().invoke(app, [*argv, "--allow-base-mismatch"]).exit_code == 0
    assert [v.ref for v in Registry(tmp_path / "reg").list()] == ["sst2@1"]
