"""PEFT interop: an exported prompt scores the same under PEFT as under spp, and adapters import back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.backbone import BackboneError
from spp.prompts.scoring import LabelSet, Scorer
from spp.registry import Registry
from spp.registry.peft_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, SPP_SIDECAR, PeftError, export_peft, import_peft

peft = pytest.importorskip("peft")

TEXTS = ["great movie", "awful storm", "lovely song today", "grim forest"]
WORDS = ("negative", "positive")


def _tiny_artifact(backbone, backbone_dir: Path, n: int = 6, seed: int = 0) -> Artifact:
    gen = torch.Generator().manual_seed(seed)
    return Artifact(
        prompt=torch.randn(n, backbone.d_model, generator=gen) * 0.5,
        meta=ArtifactMeta(task="sst2", method="superpos", backbone=str(backbone_dir), fingerprint=backbone.fingerprint,
                          d_model=backbone.d_model, n_tokens=n, metrics={"validation": {"accuracy": 0.9}}),
    )


@torch.no_grad()
def _peft_loglik(model, backbone, texts: list[str], words: tuple[str, ...]) -> torch.Tensor:
    """(B, K) summed label log-likelihoods computed by PEFT's own forward."""
    enc = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    columns = []
    for ids in backbone.label_token_ids(words):
        labels = torch.tensor([ids] * len(texts))  # (B, T)
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels).logits  # (B, T, V)
        columns.append(torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1))
    return torch.stack(columns, dim=1)  # (B, K)


def _fresh_t5(backbone_dir: Path):
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration.from_pretrained(backbone_dir, dtype=torch.float32).eval()


def test_exported_prompt_scores_the_same_under_peft(tiny_backbone, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    version, _ = reg.publish(_tiny_artifact(tiny_backbone, tiny_backbone_dir))
    assert version.fingerprint == tiny_backbone.fingerprint
    _, artifact = reg.load("sst2")
    out = export_peft(artifact, tmp_path / "adapter")
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "SEQ_2_SEQ_LM"
    assert (config["num_virtual_tokens"], config["token_dim"], config["num_transformer_submodules"]) == (6, 64, 1)
    assert (config["num_layers"], config["num_attention_heads"]) == (2, 4)  # read from the local config.json

    model = peft.PeftModel.from_pretrained(_fresh_t5(tiny_backbone_dir), str(out)).eval()
    loaded = model.prompt_encoder["default"].embedding.weight
    assert torch.equal(loaded, artifact.prompt)
    expected = Scorer(tiny_backbone).score(TEXTS, artifact.prompt, LabelSet.build(tiny_backbone, WORDS)).loglik
    got = _peft_loglik(model, tiny_backbone, TEXTS, WORDS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(got[:, 0], got[:, 1])  # the comparison is not trivially equal


def test_export_import_is_lossless(tiny_backbone, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    art = _tiny_artifact(tiny_backbone, tiny_backbone_dir, n=3, seed=1)
    out = export_peft(art, tmp_path / "adapter")
    assert (out / SPP_SIDECAR).is_file()
    back = import_peft(out)
    assert torch.equal(back.prompt, art.prompt) and back.meta == art.meta
    assert import_peft(out, backbone=tiny_backbone).meta.fingerprint == tiny_backbone.fingerprint
    renamed = import_peft(out, task="rte")
    assert renamed.meta.task == "rte" and list(renamed.meta.task_spec["label_words"]) == ["entailment", "not_entailment"]


def test_import_native_peft_adapter(tiny_backbone, tiny_backbone_dir: Path, tmp_path: Path) -> None:
    """An adapter made by PEFT itself (2 submodules by default for seq2seq) imports and scores the same."""
    config = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=5)
    model = peft.get_peft_model(_fresh_t5(tiny_backbone_dir), config)
    with torch.no_grad():
        weight = model.prompt_encoder["default"].embedding.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    model.save_pretrained(tmp_path / "native")
    assert model.peft_config["default"].num_transformer_submodules == 2

    with pytest.raises(PeftError, match="--task"):
        import_peft(tmp_path / "native", backbone=tiny_backbone)
    with pytest.raises(PeftError, match="fingerprint"):
        import_peft(tmp_path / "native", task="sst2")
    art = import_peft(tmp_path / "native", task="sst2", backbone=tiny_backbone)
    assert art.meta.fingerprint == tiny_backbone.fingerprint and art.meta.n_tokens == 5 and art.meta.method == "simple"
    assert torch.equal(art.prompt, weight[:5].detach())  # the encoder rows
    assert list(art.meta.task_spec["label_words"]) == ["negative", "positive"]
    version, _ = Registry(tmp_path / "registry").publish(art)
    assert version.ref == "sst2@1"

    model.eval()
    got = _peft_loglik(model, tiny_backbone, TEXTS, WORDS)
    expected = Scorer(tiny_backbone).score(TEXTS, art.prompt, LabelSet.build(tiny_backbone, WORDS)).loglik
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _adapter(tmp_path: Path, config: dict, tensors: dict | None) -> Path:
    from safetensors.torch import save_file

    folder = tmp_path / "bad"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(folder / ADAPTER_WEIGHTS))
    return folder


GOOD = {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": 4, "token_dim": 64}


@pytest.mark.parametrize(
    ("config", "tensors", "fragment"),
    [
        ({**GOOD, "peft_type": "LORA"}, {}, "only PROMPT_TUNING"),
        ({**GOOD, "task_type": "CAUSAL_LM"}, {}, "SEQ_2_SEQ_LM"),
        ({**GOOD, "num_virtual_tokens": 0}, {}, "num_virtual_tokens"),
        (GOOD, None, "no adapter_model.safetensors"),
        (GOOD, {"other": torch.zeros(4, 64)}, "no 'prompt_embeddings' tensor"),
        (GOOD, {"prompt_embeddings": torch.zeros(3, 64)}, "has shape"),
        (GOOD, {"prompt_embeddings": torch.zeros(4, 32)}, "has shape"),
    ],
)
def test_import_rejects_bad_adapters(tmp_path: Path, config: dict, tensors, fragment: str) -> None:
    with pytest.raises(PeftError, match=fragment) as info:
        import_peft(_adapter(tmp_path, config, tensors), task="sst2")
    assert "\n" not in str(info.value)


def test_import_refuses_pickles_and_mismatched_backbones(tiny_backbone, tmp_path: Path) -> None:
    folder = _adapter(tmp_path, GOOD, None)
    (folder / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(PeftError, match="never loads"):
        import_peft(folder, task="sst2")
    with pytest.raises(PeftError, match=r"no adapter_config\.json"):
        import_peft(tmp_path, task="sst2")
    wide = _adapter(tmp_path / "w", {**GOOD, "token_dim": 32}, {"prompt_embeddings": torch.zeros(4, 32)})
    with pytest.raises(BackboneError, match="d_model 32"):
        import_peft(wide, task="sst2", backbone=tiny_backbone)
