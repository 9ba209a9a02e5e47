"""Rank classification agrees with a brute-force per-candidate loss loop."""

from __future__ import annotations

import pytest
import torch

from spp.prompts.scoring import LabelSet, Scorer, log_normalizer, score_texts

LABEL_SETS = [("yes", "no"), ("entailment", "neutral", "contradiction"), ("a", "bb", "ccc", "dddd")]
TEXTS = ["hello world", "a much longer sentence that goes on", "x", "two words", "the third row"]


def brute_force(scorer: Scorer, text: str, prompt: torch.Tensor, words) -> list[float]:
    """One row alone, one candidate at a time, through the model's own loss."""
    model = scorer.backbone.model
    ids, mask = scorer.tokenize([text])
    encoded = Scorer(scorer.backbone, packed=False).encode(ids, mask, prompt)  # transformers' own encoder
    states, enc_mask = encoded.states, encoded.mask
    out = []
    for target in scorer.backbone.label_token_ids(words):
        labels = torch.tensor([target])
        loss = model(encoder_outputs=(states,), attention_mask=enc_mask, labels=labels).loss
        out.append(-loss.item() * len(target))  # mean token NLL back to a sum
    return out


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_batch_matches_brute_force(tiny_backbone, seed: int, packed: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    scorer = Scorer(tiny_backbone, packed=packed)
    e = tiny_backbone.d_model
    prompts = [torch.randn(int(torch.randint(1, 7, (1,), generator=g)), e, generator=g) for _ in TEXTS]
    sets = [LabelSet.build(tiny_backbone, LABEL_SETS[i % 3]) for i in range(len(TEXTS))]
    with torch.no_grad():
        scores = scorer.score(TEXTS, prompts, sets)
        for i, text in enumerate(TEXTS):
            expected = brute_force(scorer, text, prompts[i], sets[i].words)
            got = scores.loglik[i, : len(expected)].tolist()
            assert got == pytest.approx(expected, abs=1e-4)
            assert torch.isinf(scores.loglik[i, len(expected):]).all()
    for row, k in zip(scores.probs(), scores.sizes):
        assert len(row) == k and sum(row) == pytest.approx(1.0, abs=1e-5)


def test_batch_composition_does_not_change_scores(tiny_backbone) -> None:
    scorer = Scorer(tiny_backbone)
    prompt = torch.randn(4, tiny_backbone.d_model)
    labels = LabelSet.build(tiny_backbone, LABEL_SETS[1])
    alone = torch.cat([scorer.score([t], prompt, labels).loglik for t in TEXTS])
    together = scorer.score(TEXTS, prompt, labels).loglik
    assert torch.allclose(alone, together, atol=1e-4)


def test_score_texts_restores_input_order(tiny_backbone) -> None:
    scorer = Scorer(tiny_backbone)
    prompt = torch.randn(2, tiny_backbone.d_model)
    labels = LabelSet.build(tiny_backbone, LABEL_SETS[0])
    preds, probs = score_texts(scorer, TEXTS, prompt, labels, batch_size=2)
    direct = scorer.score(TEXTS, prompt, labels)
    assert preds == direct.preds
    assert torch.allclose(torch.tensor(probs), torch.tensor(direct.probs()), atol=1e-5)


def test_generate_returns_strings(tiny_backbone) -> None:
    scorer = Scorer(tiny_backbone)
    out = scorer.generate(["sentiment: great movie"], torch.zeros(0, tiny_backbone.d_model), LabelSet.build(tiny_backbone, ("negative", "positive")))
    assert out == ["positive"]  # the tiny backbone learned the instruction-prefixed task


def reference_loglik(scorer: Scorer, states, enc_mask, label_sets) -> torch.Tensor:
    """The straightforward computation the lean scorer must equal: the full model forward,
    logits at every decoder position (padding included), log-softmax over the vocabulary."""
    from spp.prompts.scoring import _pack_candidates

    model = scorer.backbone.model
    packed = _pack_candidates(label_sets, scorer.backbone, states.device, {})
    bias = torch.zeros(packed.allowed.shape).masked_fill(~packed.allowed, torch.finfo(torch.float32).min)
    logits = model(encoder_outputs=(states,), attention_mask=enc_mask, decoder_input_ids=packed.inputs,
                   decoder_attention_mask=bias.unsqueeze(1), use_cache=False).logits  # (B, D, V)
    token_lp = torch.log_softmax(logits, -1).gather(-1, packed.targets.unsqueeze(-1)).squeeze(-1)  # (B, D)
    B, K = len(label_sets), packed.k_max
    out = torch.full((B, K), float("-inf"))
    for i, ls in enumerate(label_sets):
        start = 0
        for k, ids in enumerate(ls.token_ids):
            out[i, k] = token_lp[i, start : start + len(ids)].sum()
            start += len(ids)
    return out


@pytest.mark.parametrize("mixed", [False, True])
def test_lean_scorer_equals_the_reference_computation(tiny_backbone, mixed: bool) -> None:
    """Padding on both sides: texts of different lengths (encoder) and, when mixed, label sets
    of different sizes and token lengths (decoder), with prompts of different n per row."""
    g = torch.Generator().manual_seed(7)
    scorer = Scorer(tiny_backbone)
    e = tiny_backbone.d_model
    if mixed:
        prompts = [torch.randn(n, e, generator=g) for n in (1, 5, 3, 2, 6)]
        sets = [LabelSet.build(tiny_backbone, LABEL_SETS[i % 3]) for i in range(len(TEXTS))]
    else:
        prompts = torch.randn(4, e, generator=g)
        sets = [LabelSet.build(tiny_backbone, LABEL_SETS[1])] * len(TEXTS)
    with torch.no_grad():
        ids, mask = scorer.tokenize(TEXTS)
        assert (mask == 0).any()  # the batch really has encoder padding
        encoded = scorer.encode(ids, mask, prompts)
        lean = scorer.candidate_loglik(encoded, sets).loglik
        ref = reference_loglik(scorer, encoded.padded(), encoded.mask, sets)
    assert lean.dtype == torch.float32
    assert torch.equal(torch.isinf(lean), torch.isinf(ref))
    finite = torch.isfinite(ref)
    assert torch.allclose(lean[finite], ref[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("scale", [1.0, 30.0, 300.0])
def test_log_normalizer_equals_logsumexp(scale: float) -> None:
    """Wide logits (scale 300: most terms underflow exp) still give torch's float32 logsumexp."""
    logits = torch.randn(16, 5000, generator=torch.Generator().manual_seed(1)) * scale
    torch.testing.assert_close(log_normalizer(logits), torch.logsumexp(logits, dim=-1), rtol=1e-6, atol=1e-5)
    half = logits.to(torch.bfloat16)
    torch.testing.assert_close(log_normalizer(half), torch.logsumexp(half.float(), dim=-1), rtol=1e-6, atol=1e-5)
