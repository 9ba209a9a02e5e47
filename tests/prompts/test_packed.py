"""Unpadded forwards equal transformers' padded ones, for every T5 flavour they accept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spp.prompts import packed
from spp.prompts.backbone import Backbone, prepend_prompts
from spp.prompts.demo.toy import tiny_config
from spp.prompts.scoring import LabelSet, Scorer

WORDS = ["yes", "no"], ["entailment", "not_entailment", "maybe so"], ["a"]


def random_backbone(ffn: str, tied: bool) -> Backbone:
    """A random toy T5 of one flavour: v1.1 (gated-gelu, untied) or v1.0 (relu, tied head)."""
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    config = tiny_config(384, d_model=32, layers=2)
    config.feed_forward_proj, config.tie_word_embeddings = ffn, tied
    config.dense_act_fn, config.is_gated_act = ("gelu_new", True) if ffn == "gated-gelu" else ("relu", False)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).eval()
    return Backbone(model=model, tokenizer=ByT5Tokenizer(), name=f"toy-{ffn}", fingerprint="-")


@pytest.fixture(params=[("gated-gelu", False), ("relu", True)], ids=["v1.1", "v1.0"])
def backbone(request) -> Backbone:
    return random_backbone(*request.param)


def test_plan_round_trips_every_real_token() -> None:
    lens = [3, 6, 1, 4, 5]
    mask = (torch.arange(6).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)).long()  # (5, 6)
    layout = packed.plan(mask, group=2)
    assert layout.tokens == sum(lens) and layout.longest == 6
    assert [rows for rows, _, _ in layout.groups] == [[2, 0], [3, 4], [1]]  # sorted by length
    assert [width for _, width, _ in layout.groups] == [3, 5, 6]
    tokens = torch.arange(layout.tokens).unsqueeze(1).float()  # (N, 1)
    slotted = torch.cat([tokens, torch.full((1, 1), -1.0)]).index_select(0, layout.slots)  # (P, 1)
    assert slotted.shape[0] == 2 * 3 + 2 * 5 + 6
    assert int((slotted == -1).sum()) == slotted.shape[0] - layout.tokens  # padding slots only
    assert torch.equal(slotted.index_select(0, layout.unslot), tokens)
    assert [k.sum().item() for k in layout.key_mask] == [1 + 3, 4 + 5, 6]


@pytest.mark.parametrize("group", sorted({1, 3, 8, packed.ATTENTION_GROUP}))
def test_encoder_matches_transformers(backbone: Backbone, group: int) -> None:
    g = torch.Generator().manual_seed(group)
    lens = [5, 17, 2, 11, 9, 17, 1]
    mask = (torch.arange(17).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)).long()  # (7, 17)
    inputs = torch.randn(7, 17, backbone.d_model, generator=g)  # (B, T, e)
    encoder = backbone.model.get_encoder()
    with torch.no_grad():
        ref = encoder(inputs_embeds=inputs, attention_mask=mask).last_hidden_state  # (B, T, e)
        layout = packed.plan(mask, group=group)
        got = packed.encode(encoder, inputs, layout)  # (N, e)
    expected = ref.reshape(-1, backbone.d_model)[mask.reshape(-1).bool()]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_scorer_packed_equals_padded(backbone: Backbone) -> None:
    g = torch.Generator().manual_seed(1)
    texts = ["x", "a longer input text than the others", "two words", "mid size text", "", "z" * 40] * 2
    prompts = [torch.randn(int(torch.randint(1, 6, (1,), generator=g)), backbone.d_model, generator=g) for _ in texts]
    labels = [LabelSet.build(backbone, WORDS[i % 3]) for i in range(len(texts))]
    with torch.no_grad():
        padded = Scorer(backbone, packed=False).score(texts, prompts, labels)
        unpadded = Scorer(backbone, packed=True).score(texts, prompts, labels)
    torch.testing.assert_close(unpadded.loglik, padded.loglik, atol=1e-4, rtol=1e-5)
    assert unpadded.sizes == padded.sizes == [2, 3, 1] * 4


def test_supports_only_what_it_reproduces() -> None:
    backbone = random_backbone("gated-gelu", False)
    assert packed.supports(backbone.model)
    assert Scorer(backbone).packed  # the default wherever it applies
    assert Scorer(backbone, compile=True).packed  # compiling keeps them (their sublayers compiled)
    assert not packed.supports(backbone.model.half())  # float16: HF clamps infinities, kept
    assert not packed.supports(random_backbone("relu", True).model.train())
    assert not packed.supports(nn.Linear(2, 2))


def test_label_loss_and_prompt_gradient_match_transformers(backbone: Backbone) -> None:
    """The training loss (spp train's forward): same value and same gradient for the prompt."""
    texts = ["x", "a longer input text than the others", "two words", "mid size text"]
    enc = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([[5, 6, 1], [7, 1, -100], [8, 9, 1], [1, -100, -100]])  # (B, D), -100 ignored
    model = backbone.model
    results = []
    for use_packed in (False, True):
        prompt = nn.Parameter(torch.randn(5, backbone.d_model, generator=torch.Generator().manual_seed(0)))
        inputs, mask = prepend_prompts(model.get_input_embeddings()(enc.input_ids), enc.attention_mask, prompt)
        if use_packed:
            loss = packed.label_loss(model, inputs, mask, labels)
        else:
            loss = model(inputs_embeds=inputs, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        results.append((loss.detach(), prompt.grad))
    (loss_ref, grad_ref), (loss_got, grad_got) = results
    torch.testing.assert_close(loss_got, loss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_got, grad_ref, atol=1e-6, rtol=1e-4)
    assert grad_ref.abs().sum() > 0
