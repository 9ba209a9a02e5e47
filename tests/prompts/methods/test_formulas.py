"""Each method's own formulas and the shared init strategies, checked against closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spp.prompts.methods import ConfigError, build_method
from spp.prompts.methods.init import SAMPLED_VOCAB_TOP, sample_vocab_ids

VOCAB = 600  # the conftest context's vocabulary size




# --- simple (Lester et al. 2021) -----------------------------------------------------------

def _row_ids(rows: torch.Tensor, emb: torch.Tensor) -> list[int]:
    """Index of the embedding row equal to each row (fails if a row is not one)."""
    ids = []
    for r in rows:
        hits = (emb == r).all(dim=1).nonzero().flatten().tolist()
        assert len(hits) == 1
        ids.append(hits[0])
    return ids


def test_sample_vocab_init_uses_distinct_frequent_tokens(make_ctx):
    ctx = make_ctx(vocab=SAMPLED_VOCAB_TOP + 500)
    method = build_method("simple", {"n_tokens": 50}, ctx)
    ids = _row_ids(method.prompt.detach(), ctx.embedding)
    assert len(set(ids)) == 50 and max(ids) < SAMPLED_VOCAB_TOP


def test_sample_vocab_ids_small_pool_uses_every_id_before_repeating():
    g = torch.Generator().manual_seed(0)
    assert sorted(sample_vocab_ids(8, 8, g).tolist()) == list(range(8))
    ids = sample_vocab_ids(10, 4, g).tolist()
    assert sorted(ids[:4]) == [0, 1, 2, 3] and set(ids) == {0, 1, 2, 3}


def test_uniform_init_range(build):
    p = build("simple", d=64, init="uniform", n_tokens=50).prompt.detach()
    assert p.min() >= -0.5 and p.max() <= 0.5 and p.std() > 0.2


def test_label_init_label_words_first_then_sampled_vocab(make_ctx):
    ctx = make_ctx(label_token_ids=[[5, 6], [7], [8, 9, 10]])
    p = build_method("simple", {"n_tokens": 5, "init": "labels"}, ctx).prompt.detach()
    emb = ctx.embedding
    torch.testing.assert_close(p[0], emb[[5, 6]].mean(0))
    torch.testing.assert_close(p[1], emb[7])
    torch.testing.assert_close(p[2], emb[[8, 9, 10]].mean(0))
    assert len(_row_ids(p[3:], emb)) == 2  # the rest are real token embeddings


def test_label_init_more_labels_than_tokens_keeps_the_first(make_ctx):
    ctx = make_ctx(label_token_ids=[[1], [2], [3]])
    p = build_method("simple", {"n_tokens": 2, "init": "labels"}, ctx).prompt.detach()
    torch.testing.assert_close(p, ctx.embedding[[1, 2]])


def test_label_init_errors(make_ctx):
    with pytest.raises(ConfigError, match="label token ids"):
        build_method("simple", {"init": "labels"}, make_ctx(label_token_ids=[]))
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        build_method("simple", {"init": "labels"}, make_ctx(label_token_ids=[[VOCAB]]))
    with pytest.raises(ConfigError, match="no tokens"):
        build_method("simple", {"init": "labels"}, make_ctx(label_token_ids=[[1], []]))


def test_artifact_init_starts_from_the_given_prompt(make_ctx):
    start = torch.randn(4, 32)
    method = build_method("simple", {"n_tokens": 4, "init": "artifact:rte@2"}, make_ctx(init_prompt=start))
    torch.testing.assert_close(method(), start, rtol=0, atol=0)
    with torch.no_grad():
        method.prompt.add_(1.0)
    assert not torch.equal(start, method().detach())  # a copy, not the caller's tensor


def test_artifact_init_errors_name_both_shapes(make_ctx):
    with pytest.raises(ConfigError, match="init_prompt"):
        build_method("simple", {"init": "artifact:x.safetensors"}, make_ctx())
    with pytest.raises(ConfigError, match=r"\(10, 16\).*d_model=16.*\(10, 32\).*d_model=32"):
        build_method("simple", {"init": "artifact:x.safetensors"}, make_ctx(init_prompt=torch.zeros(10, 16)))
    with pytest.raises(ConfigError, match=r"n_tokens=4.*n_tokens=10"):
        build_method("simple", {"init": "artifact:x.safetensors"}, make_ctx(init_prompt=torch.zeros(4, 32)))


def test_only_artifact_init_uses_init_prompt(make_ctx):
    ctx = make_ctx(init_prompt=torch.zeros(10, 32))
    assert build_method("simple", {}, ctx).prompt.abs().sum() > 0


# --- superpos (arXiv 2406.05279) -----------------------------------------------------------

def test_superpos_frozen_embeddings_are_distinct_vocab_rows_and_not_parameters(make_ctx):
    ctx = make_ctx()
    method = build_method("superpos", {"m": 100}, ctx)
    assert method.E_freeze.shape == (32, 100)
    ids = _row_ids(method.E_freeze.T, ctx.embedding)
    assert len(set(ids)) == 100
    assert "E_freeze" not in dict(method.named_parameters())
    assert "E_freeze" in method.state_tensors()
    assert not method.E_freeze.requires_grad


def test_superpos_m_equal_to_vocab_uses_every_token(make_ctx):
    ctx = make_ctx(vocab=40)
    method = build_method("superpos", {"m": 40}, ctx)
    assert sorted(_row_ids(method.E_freeze.T, ctx.embedding)) == list(range(40))


def test_superpos_at_init_is_frozen_embeddings_times_weights(build):
    method = build("superpos")
    assert torch.equal(method.delta, torch.zeros_like(method.delta))
    torch.testing.assert_close(method(), method.p_prime @ method.E_freeze.T)


@pytest.mark.parametrize("softmax", [False, True])
def test_superpos_forward_matches_per_token_formula(softmax, build, perturb_):
    method = build("superpos", m=16, n_tokens=4, softmax=softmax)
    perturb_(method)
    w = torch.softmax(method.p_prime, -1) if softmax else method.p_prime
    expected = torch.stack([(method.E_freeze + method.delta[i]) @ w[i] for i in range(4)])
    torch.testing.assert_close(method(), expected)


def test_superpos_softmax_gives_convex_combinations(build):
    method = build("superpos", m=16, softmax=True)
    w = method.weights()
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(10))
    with torch.no_grad():
        method.p_prime.zero_()  # equal weights: the mean of the frozen embeddings
        method.p_prime[1, 3] = 100.0  # one dominant weight: that frozen embedding
    out = method()
    torch.testing.assert_close(out[0], method.E_freeze.mean(dim=1))
    torch.testing.assert_close(out[1], method.E_freeze[:, 3])


def test_superpos_initial_tokens_have_the_norm_scale_of_token_embeddings(build):
    method = build("superpos", d=64, n_tokens=400)
    token_sq = method().detach().pow(2).sum(dim=1).mean()
    embedding_sq = method.E_freeze.pow(2).sum(dim=0).mean()
    assert abs(token_sq / embedding_sq - 1.0) < 0.15


# --- residual (Razdaibiedina et al. 2023) --------------------------------------------------

def test_residual_prompt_starts_from_sampled_vocab(make_ctx):
    ctx = make_ctx()
    method = build_method("residual", {}, ctx)
    assert len(set(_row_ids(method.prompt.detach(), ctx.embedding))) == 10


@pytest.mark.parametrize("shared", [True, False])
def test_residual_skip_connection(shared, build, perturb_):
    method = build("residual", shared=shared)
    perturb_(method)
    with torch.no_grad():
        method.up_weight.zero_()
        method.up_bias.zero_()
        method.ln_weight.zero_()
    torch.testing.assert_close(method(), method.prompt + method.ln_bias)


def test_residual_shared_matches_torch_modules(build, perturb_):
    method = build("residual", bottleneck=12)
    perturb_(method)
    e, b = 32, 12
    mlp = nn.Sequential(nn.Linear(e, b), nn.ReLU(), nn.Linear(b, e), nn.LayerNorm(e))
    with torch.no_grad():
        mlp[0].weight.copy_(method.down_weight[0].T)
        mlp[0].bias.copy_(method.down_bias[0])
        mlp[2].weight.copy_(method.up_weight[0].T)
        mlp[2].bias.copy_(method.up_bias[0])
        mlp[3].weight.copy_(method.ln_weight[0])
        mlp[3].bias.copy_(method.ln_bias[0])
    torch.testing.assert_close(method(), mlp(method.prompt) + method.prompt)


def test_residual_unshared_gives_each_token_its_own_mlp(build, perturb_):
    method = build("residual", bottleneck=12, shared=False, n_tokens=3)
    perturb_(method)
    rows = []
    for i in range(3):
        h = torch.relu(method.prompt[i] @ method.down_weight[i] + method.down_bias[i])
        y = h @ method.up_weight[i] + method.up_bias[i]
        rows.append(F.layer_norm(y, (32,), method.ln_weight[i], method.ln_bias[i]) + method.prompt[i])
    torch.testing.assert_close(method(), torch.stack(rows))


# --- ptuning (Liu et al. 2021, PEFT's MLP encoder) -----------------------------------------

def test_ptuning_matches_peft_prompt_encoder(build):
    peft = pytest.importorskip("peft")
    n, e, h = 4, 32, 16
    method = build("ptuning", n_tokens=n, hidden=h)
    config = peft.PromptEncoderConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, token_dim=e, num_transformer_submodules=1,
        num_attention_heads=2, num_layers=1, encoder_reparameterization_type="MLP", encoder_hidden_size=h,
    )
    encoder = peft.PromptEncoder(config)
    assert sum(p.numel() for p in encoder.parameters()) == method.num_trainable()
    with torch.no_grad():
        encoder.embedding.weight.copy_(method.embedding)
        for i in (0, 2, 4):
            encoder.mlp_head[i].weight.copy_(method.mlp[i].weight)
            encoder.mlp_head[i].bias.copy_(method.mlp[i].bias)
    torch.testing.assert_close(method(), encoder(torch.arange(n)))


def test_ptuning_hidden_zero_means_d_model(build):
    method = build("ptuning", d=40)
    assert method.hidden_size == 40 and method.mlp[0].weight.shape == (40, 40)


# --- ept -----------------------------------------------------------------------------------

def test_ept_broadcasts_one_vector(build):
    method = build("ept", n_tokens=10, hidden=4)
    out = method()
    assert out.shape == (10, 32)
    assert all(torch.equal(out[0], row) for row in out)
    torch.testing.assert_close(out[0], method.up @ (method.down @ method.vector))


def test_ept_vector_init_is_uniform_half(build):
    v = build("ept", d=1024).vector.detach()
    assert v.min() >= -0.5 and v.max() <= 0.5 and v.std() > 0.2
