"""Backbone: real architectures, freezing, dropout, fingerprint, prompt placement."""

from __future__ import annotations

import pytest
import torch

from spp.prompts.backbone import (
    BackboneError,
    build_random_model,
    embedding_fingerprint,
    freeze,
    known_random_names,
    load_backbone,
    prepend_prompts,
)
from spp.prompts.train.pipeline import backbone_shape

# Parameter counts of the real Hub checkpoints (T5ForConditionalGeneration.num_parameters()).
REAL_COUNTS = {
    "t5-small": 60_506_624,
    "t5-base": 222_903_552,
    "google/t5-small-lm-adapt": 76_961_152,
    "google/t5-base-lm-adapt": 247_577_856,
}


def closed_form_t5(d: int, ff: int, heads: int, dkv: int, layers: int, vocab: int, gated: bool, tied: bool) -> int:
    """T5 parameter count from its hyperparameters (no biases; relative bias in layer 0 only)."""
    attn = 4 * d * heads * dkv
    ffn = (3 if gated else 2) * d * ff
    enc = layers * (attn + ffn + 2 * d) + 32 * heads + d
    dec = layers * (2 * attn + ffn + 3 * d) + 32 * heads + d
    return vocab * d * (1 if tied else 2) + enc + dec


@pytest.mark.parametrize("name", ["google/t5-small-lm-adapt", "google/t5-base-lm-adapt"])
def test_random_lm_adapt_has_real_checkpoint_parameter_count(name: str) -> None:
    model = build_random_model(name)
    total = sum(p.numel() for p in model.parameters())
    assert total == REAL_COUNTS[name]
    assert model.lm_head.weight is not model.shared.weight  # v1.1 checkpoints are untied
    c = model.config
    assert total == closed_form_t5(c.d_model, c.d_ff, c.num_heads, c.d_kv, c.num_layers, c.vocab_size, True, False)


@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_shape_only_count_matches_real_checkpoint(name: str) -> None:
    _, total = backbone_shape(f"random:{name}")
    assert total == REAL_COUNTS[name]


def test_v10_random_builds_stay_tied() -> None:
    model = build_random_model("t5-small")
    assert model.lm_head.weight is model.shared.weight


def test_known_names_and_unknown_random_name() -> None:
    assert {"t5-small", "t5-base", "t5-large", "google/t5-small-lm-adapt", "google/t5-base-lm-adapt"} <= set(
        known_random_names()
    )
    with pytest.raises(BackboneError, match="unknown random architecture"):
        load_backbone("random:t5-gigantic")


def test_random_backbone_without_tokenizer_offline_says_so() -> None:
    with pytest.raises(BackboneError, match="--tokenizer"):
        load_backbone("random:t5-small")


def test_missing_local_backbone_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackboneError, match="cannot load T5 backbone"):
        load_backbone(str(tmp_path / "nothing-here"))


def test_backbone_is_frozen_and_fingerprinted(tiny_backbone) -> None:
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert tiny_backbone.fingerprint == embedding_fingerprint(tiny_backbone.model)
    assert tiny_backbone.fingerprint.startswith("sha256:") and len(tiny_backbone.fingerprint) == 71


def test_fingerprint_changes_with_embeddings(tiny_backbone_dir) -> None:
    a = load_backbone(str(tiny_backbone_dir), device="cpu")
    with torch.no_grad():
        a.model.get_input_embeddings().weight[0, 0] += 1.0
    assert embedding_fingerprint(a.model) != a.fingerprint


def test_dropout_off_gives_identical_train_mode_forwards(tiny_backbone_dir) -> None:
    bb = load_backbone(str(tiny_backbone_dir), device="cpu", dropout="off")
    bb.model.config.dropout_rate = 0.0
    for module in bb.model.modules():  # make sure the off switch, not the config, is what we test
        if isinstance(module, torch.nn.Dropout):
            assert module.p == 0.0
    bb.model.train()
    ids = torch.randint(3, 200, (2, 12))
    labels = torch.randint(3, 200, (2, 3))
    a = bb.model(input_ids=ids, labels=labels).logits
    b = bb.model(input_ids=ids, labels=labels).logits
    assert torch.equal(a, b)


def test_dropout_keep_is_stochastic(tiny_backbone_dir) -> None:
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(str(tiny_backbone_dir))
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3
    freeze(model, "keep")
    model.train()
    ids = torch.randint(3, 200, (2, 12))
    labels = torch.randint(3, 200, (2, 3))
    assert not torch.equal(model(input_ids=ids, labels=labels).logits, model(input_ids=ids, labels=labels).logits)


def test_prepend_prompts_mixed_lengths_places_padding_last() -> None:
    e = 4
    embeds = torch.arange(2 * 3 * e, dtype=torch.float32).view(2, 3, e)  # (B, L, e)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    p0, p1 = torch.full((1, e), -1.0), torch.full((3, e), -2.0)
    out, full = prepend_prompts(embeds, mask, [p0, p1])
    assert out.shape == (2, 4, e)
    assert full.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert torch.equal(out[0, 0], p0[0]) and torch.equal(out[0, 1:], embeds[0])
    assert torch.equal(out[1, :3], p1) and torch.equal(out[1, 3], embeds[1, 0])
    # one shared prompt: the same as the per-row path for equal lengths
    shared, m1 = prepend_prompts(embeds, torch.ones(2, 3, dtype=torch.long), p1)
    rows, m2 = prepend_prompts(embeds, torch.ones(2, 3, dtype=torch.long), [p1, p1])
    assert torch.equal(shared, rows) and torch.equal(m1, m2)


def test_per_row_prompts_match_each_row_alone_and_copy_each_distinct_prompt_once() -> None:
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    e, B = 8, 64
    distinct = [torch.randn(n, e, generator=g, requires_grad=True) for n in (1, 3, 5, 2, 4, 6, 3, 2)]
    chosen = [distinct[(i * 5) % 8] for i in range(B)]
    embeds = torch.randn(B, 7, e, generator=g).to(torch.bfloat16)  # prompts are float32: cast on copy
    mask = (torch.arange(7).unsqueeze(0) < torch.randint(1, 8, (B, 1), generator=g)).long()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out, full = prepend_prompts(embeds, mask, chosen)
    copies = sum(ev.name == "aten::copy_" for ev in prof.events())
    assert copies <= len(distinct) + 4, copies  # was 2 per row (a cast, then a copy)
    for i in range(B):  # each row as the one-prompt path builds it alone, then padding
        alone, m = prepend_prompts(embeds[i : i + 1], mask[i : i + 1], chosen[i])
        n = int(m.sum())
        assert torch.equal(out[i, :n], alone[0][m[0].bool()]) and full[i].tolist() == [1] * n + [0] * (out.shape[1] - n)
        assert not out[i, n:].any()
    out.float().sum().backward()  # gradients reach every distinct prompt through the index
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distinct)
