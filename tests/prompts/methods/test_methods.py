"""Behaviour of every soft-prompt method: shapes, parameter counts, init, state, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spp.prompts import methods as base
from spp.prompts.methods import ConfigError, InitContext, build_method, get_method, method_names
from spp.prompts.methods.init import SAMPLED_VOCAB_TOP, sample_vocab_ids

VOCAB = 600
EXPECTED = {"simple", "superpos", "residual", "ptuning", "ept"}


def make_ctx(d: int = 32, vocab: int = VOCAB, seed: int = 0, **kwargs) -> InitContext:
    """A context with everything a method may ask for; the embedding is random but fixed."""
    emb = torch.randn(vocab, d, generator=torch.Generator().manual_seed(1234)) * 3.0  # (V, e)
    kwargs.setdefault("label_token_ids", [[5, 6], [7]])
    kwargs.setdefault("sources", torch.randn(3, 10, d, generator=torch.Generator().manual_seed(99)))
    return InitContext(embedding=emb, generator=torch.Generator().manual_seed(seed), **kwargs)


def build(name: str, d: int = 32, seed: int = 0, **options) -> base.PromptMethod:
    n = options.get("n_tokens")
    extra = {}
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:  # ATTEMPT mixes whole prompts: sources need n
        extra["sources"] = torch.randn(3, n, d, generator=torch.Generator().manual_seed(99))
    return build_method(name, options, make_ctx(d=d, seed=seed, **extra))


def perturb_(method: nn.Module, seed: int = 7) -> None:
    """Move every parameter away from its init so tests do not pass by re-initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


# --- closed-form trainable parameter counts (the papers' formulas, written out) -------------

def _count_defaults(name: str, e: int) -> int:
    n = 10
    return {
        "simple": n * e,
        "superpos": n * (e * 128 + 128),  # ΔE_i (e x m) and p'_i (m) per token, m = 128
        "residual": n * e + e * 128 + 128 + 128 * e + e + 2 * e,  # P, down, up, LayerNorm
        "ptuning": n * e + (e * e + e) + (e * e + e) + (e * e + e),  # hidden = e
        "ept": e + e * 1 + 1 * e,  # n = 1, h = 1, no biases
    }[name]


NON_DEFAULT = [
    ("superpos", {"m": 64}, lambda e: 10 * (e * 64 + 64)),
    ("superpos", {"m": 64, "softmax": True}, lambda e: 10 * (e * 64 + 64)),
    ("residual", {"bottleneck": 400}, lambda e: 10 * e + e * 400 + 400 + 400 * e + e + 2 * e),
    ("residual", {"bottleneck": 400, "shared": False},
     lambda e: 10 * e + 10 * (e * 400 + 400 + 400 * e + e + 2 * e)),
    ("ept", {"hidden": 4, "n_tokens": 10}, lambda e: e + e * 4 + 4 * e),
    ("ptuning", {"hidden": 32}, lambda e: 10 * e + (e * 32 + 32) + (32 * 32 + 32) + (32 * e + e)),
    ("simple", {"n_tokens": 20, "init": "uniform"}, lambda e: 20 * e),
]


def test_registry_holds_the_five_methods():
    assert EXPECTED <= set(method_names())
    for name in method_names():
        cls = get_method(name)
        assert cls.name == name
        assert issubclass(cls.config_cls, base.MethodConfig)


@pytest.mark.parametrize("d", [512, 768, 1024])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trainable_count_defaults(name, d):
    method = build(name, d=d)
    assert method.num_trainable() == _count_defaults(name, d)


@pytest.mark.parametrize("d", [512, 768, 1024])
@pytest.mark.parametrize("name,options,formula", NON_DEFAULT)
def test_trainable_count_options(name, options, formula, d):
    assert build(name, d=d, **options).num_trainable() == formula(d)


def test_ept_matches_the_papers_2_3k_on_t5_base():
    assert build("ept", d=768).num_trainable() == 2304


def test_paper_default_hyperparameters():
    got = {n: (get_method(n).default_lr, get_method(n).default_weight_decay) for n in EXPECTED}
    assert got == {
        "simple": (0.01, 0.01),
        "superpos": (0.01, 1e-5),
        "residual": (0.3, 0.01),
        "ptuning": (1e-3, 0.01),
        "ept": (0.3, 0.01),
    }
    assert get_method("ept").config_cls().n_tokens == 1
    assert get_method("simple").config_cls().n_tokens == 10


# --- generic behaviour, over every registered method ---------------------------------------

@pytest.mark.parametrize("name", method_names())
def test_summary_is_one_line(name):
    summary = get_method(name).summary
    assert summary.strip() and "\n" not in summary


@pytest.mark.parametrize("name", method_names())
@pytest.mark.parametrize("n", [1, 3])
def test_forward_shape_and_dtype(name, n):
    out = build(name, d=48, n_tokens=n)()
    assert out.shape == (n, 48)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", method_names())
def test_collapse_equals_forward(name):
    method = build(name)
    perturb_(method)
    collapsed = method.collapse()
    assert not collapsed.requires_grad
    assert collapsed.device.type == "cpu" and collapsed.dtype == torch.float32
    assert collapsed.is_contiguous()
    torch.testing.assert_close(collapsed, method().detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", method_names())
def test_same_seed_same_init_other_seed_differs(name):
    a, b, c = build(name, seed=3), build(name, seed=3), build(name, seed=4)
    torch.testing.assert_close(a(), b(), rtol=0, atol=0)
    for (ka, va), (kb, vb) in zip(a.state_tensors().items(), b.state_tensors().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    assert not torch.equal(a(), c())


@pytest.mark.parametrize("name", method_names())
def test_init_leaves_global_rng_and_embedding_alone(name):
    ctx = make_ctx()
    before = ctx.embedding.clone()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    method = build_method(name, {}, ctx)
    assert torch.equal(torch.rand(4), expected)  # all randomness came from ctx.generator
    perturb_(method)
    assert torch.equal(ctx.embedding, before)


@pytest.mark.parametrize("name", method_names())
def test_state_round_trip_into_fresh_instance(name):
    trained = build(name, seed=0)
    perturb_(trained)
    state = trained.state_tensors()
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values())
    fresh = build(name, seed=1)
    assert not torch.equal(fresh(), trained())
    fresh.load_state_tensors(state)
    torch.testing.assert_close(fresh(), trained(), rtol=0, atol=0)


@pytest.mark.parametrize("name", method_names())
def test_load_state_rejects_missing_tensor(name):
    method = build(name)
    state = method.state_tensors()
    state.pop(next(iter(state)))
    with pytest.raises(RuntimeError):
        build(name, seed=1).load_state_tensors(state)


@pytest.mark.parametrize("name", method_names())
def test_param_groups_cover_each_parameter_once(name):
    method = build(name)
    groups = method.param_groups(0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in method.parameters() if p.requires_grad)
    assert groups[0]["weight_decay"] == 0.05
    assert all(g["weight_decay"] == 0.0 for g in groups[1:])


def _decayed_names(method) -> set[str]:
    decayed = {id(p) for p in method.param_groups(0.1)[0]["params"]}
    return {n for n, p in method.named_parameters() if id(p) in decayed}


def test_weight_decay_split_per_method():
    assert _decayed_names(build("simple")) == {"prompt"}
    assert _decayed_names(build("superpos")) == {"delta", "p_prime"}
    assert _decayed_names(build("ept")) == {"vector", "down", "up"}  # everything, vector included
    for shared in (True, False):
        assert _decayed_names(build("residual", shared=shared)) == {"prompt", "down_weight", "up_weight"}
    assert _decayed_names(build("ptuning")) == {"embedding", "mlp.0.weight", "mlp.2.weight", "mlp.4.weight"}


@pytest.mark.parametrize("name", method_names())
def test_gradients_reach_every_trainable_parameter(name):
    method = build(name)
    out = method()
    # A fixed random weighting instead of a plain sum: a LayerNorm output sums to a constant
    # (its bias), so forward().sum() alone would give residual's MLP an exactly-zero gradient.
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    (out.sum() + (out * weights).sum()).backward()
    for pname, p in method.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", method_names())
def test_config_dict_round_trip_is_json(name):
    cls = get_method(name).config_cls
    config = cls()
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --- invalid configurations ----------------------------------------------------------------

@pytest.mark.parametrize("name", method_names())
def test_zero_tokens_rejected(name):
    with pytest.raises(ConfigError, match="n_tokens"):
        build(name, n_tokens=0)


@pytest.mark.parametrize("name", method_names())
def test_unknown_option_rejected_by_build_method(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        build(name, no_such_option=1)


@pytest.mark.parametrize(
    "name,options,field",
    [
        ("superpos", {"m": 0}, "m"),
        ("superpos", {"m": VOCAB + 1}, "m="),
        ("superpos", {"softmax": "yes"}, "softmax"),
        ("residual", {"bottleneck": 0}, "bottleneck"),
        ("residual", {"shared": 1}, "shared"),
        ("ptuning", {"hidden": -1}, "hidden"),
        ("ept", {"hidden": 0}, "hidden"),
        ("simple", {"init": "random-normal"}, "init"),
        ("simple", {"init": "artifact:"}, "artifact"),
        ("simple", {"n_tokens": 2.5}, "n_tokens"),
    ],
)
def test_invalid_option_names_the_field(name, options, field):
    with pytest.raises(ConfigError, match=field):
        build(name, **options)


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError, match="superpos"):
        get_method("nope")


# --- simple (Lester et al. 2021) -----------------------------------------------------------

def _row_ids(rows: torch.Tensor, emb: torch.Tensor) -> list[int]:
    """Index of the embedding row equal to each row (fails if a row is not one)."""
    ids = []
    for r in rows:
        hits = (emb == r).all(dim=1).nonzero().flatten().tolist()
        assert len(hits) == 1
        ids.append(hits[0])
    return ids


def test_sample_vocab_init_uses_distinct_frequent_tokens():
    ctx = make_ctx(vocab=SAMPLED_VOCAB_TOP + 500)
    method = build_method("simple", {"n_tokens": 50}, ctx)
    ids = _row_ids(method.prompt.detach(), ctx.embedding)
    assert len(set(ids)) == 50 and max(ids) < SAMPLED_VOCAB_TOP


def test_sample_vocab_ids_small_pool_uses_every_id_before_repeating():
    g = torch.Generator().manual_seed(0)
    assert sorted(sample_vocab_ids(8, 8, g).tolist()) == list(range(8))
    ids = sample_vocab_ids(10, 4, g).tolist()
    assert sorted(ids[:4]) == [0, 1, 2, 3] and set(ids) == {0, 1, 2, 3}


def test_uniform_init_range():
    p = build("simple", d=64, init="uniform", n_tokens=50).prompt.detach()
    assert p.min() >= -0.5 and p.max() <= 0.5 and p.std() > 0.2


def test_label_init_label_words_first_then_sampled_vocab():
    ctx = make_ctx(label_token_ids=[[5, 6], [7], [8, 9, 10]])
    p = build_method("simple", {"n_tokens": 5, "init": "labels"}, ctx).prompt.detach()
    emb = ctx.embedding
    torch.testing.assert_close(p[0], emb[[5, 6]].mean(0))
    torch.testing.assert_close(p[1], emb[7])
    torch.testing.assert_close(p[2], emb[[8, 9, 10]].mean(0))
    assert len(_row_ids(p[3:], emb)) == 2  # the rest are real token embeddings


def test_label_init_more_labels_than_tokens_keeps_the_first():
    ctx = make_ctx(label_token_ids=[[1], [2], [3]])
    p = build_method("simple", {"n_tokens": 2, "init": "labels"}, ctx).prompt.detach()
    torch.testing.assert_close(p, ctx.embedding[[1, 2]])


def test_label_init_errors():
    with pytest.raises(ConfigError, match="label token ids"):
        build_method("simple", {"init": "labels"}, make_ctx(label_token_ids=[]))
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        build_method("simple", {"init": "labels"}, make_ctx(label_token_ids=[[VOCAB]]))
    with pytest.raises(ConfigError, match="no tokens"):
        build_method("simple", {"init": "labels"}, make_ctx(label_token_ids=[[1], []]))


def test_artifact_init_starts_from_the_given_prompt():
    start = torch.randn(4, 32)
    method = build_method("simple", {"n_tokens": 4, "init": "artifact:rte@2"}, make_ctx(init_prompt=start))
    torch.testing.assert_close(method(), start, rtol=0, atol=0)
    with torch.no_grad():
        method.prompt.add_(1.0)
    assert not torch.equal(start, method().detach())  # a copy, not the caller's tensor


def test_artifact_init_errors_name_both_shapes():
    with pytest.raises(ConfigError, match="init_prompt"):
        build_method("simple", {"init": "artifact:x.safetensors"}, make_ctx())
    with pytest.raises(ConfigError, match=r"\(10, 16\).*d_model=16.*\(10, 32\).*d_model=32"):
        build_method("simple", {"init": "artifact:x.safetensors"}, make_ctx(init_prompt=torch.zeros(10, 16)))
    with pytest.raises(ConfigError, match=r"n_tokens=4.*n_tokens=10"):
        build_method("simple", {"init": "artifact:x.safetensors"}, make_ctx(init_prompt=torch.zeros(4, 32)))


def test_only_artifact_init_uses_init_prompt():
    ctx = make_ctx(init_prompt=torch.zeros(10, 32))
    assert build_method("simple", {}, ctx).prompt.abs().sum() > 0


# --- superpos (arXiv 2406.05279) -----------------------------------------------------------

def test_superpos_frozen_embeddings_are_distinct_vocab_rows_and_not_parameters():
    ctx = make_ctx()
    method = build_method("superpos", {"m": 100}, ctx)
    assert method.E_freeze.shape == (32, 100)
    ids = _row_ids(method.E_freeze.T, ctx.embedding)
    assert len(set(ids)) == 100
    assert "E_freeze" not in dict(method.named_parameters())
    assert "E_freeze" in method.state_tensors()
    assert not method.E_freeze.requires_grad


def test_superpos_m_equal_to_vocab_uses_every_token():
    ctx = make_ctx(vocab=40)
    method = build_method("superpos", {"m": 40}, ctx)
    assert sorted(_row_ids(method.E_freeze.T, ctx.embedding)) == list(range(40))


def test_superpos_at_init_is_frozen_embeddings_times_weights():
    method = build("superpos")
    assert torch.equal(method.delta, torch.zeros_like(method.delta))
    torch.testing.assert_close(method(), method.p_prime @ method.E_freeze.T)


@pytest.mark.parametrize("softmax", [False, True])
def test_superpos_forward_matches_per_token_formula(softmax):
    method = build("superpos", m=16, n_tokens=4, softmax=softmax)
    perturb_(method)
    w = torch.softmax(method.p_prime, -1) if softmax else method.p_prime
    expected = torch.stack([(method.E_freeze + method.delta[i]) @ w[i] for i in range(4)])
    torch.testing.assert_close(method(), expected)


def test_superpos_softmax_gives_convex_combinations():
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


def test_superpos_initial_tokens_have_the_norm_scale_of_token_embeddings():
    method = build("superpos", d=64, n_tokens=400)
    token_sq = method().detach().pow(2).sum(dim=1).mean()
    embedding_sq = method.E_freeze.pow(2).sum(dim=0).mean()
    assert abs(token_sq / embedding_sq - 1.0) < 0.15


# --- residual (Razdaibiedina et al. 2023) --------------------------------------------------

def test_residual_prompt_starts_from_sampled_vocab():
    ctx = make_ctx()
    method = build_method("residual", {}, ctx)
    assert len(set(_row_ids(method.prompt.detach(), ctx.embedding))) == 10


@pytest.mark.parametrize("shared", [True, False])
def test_residual_skip_connection(shared):
    method = build("residual", shared=shared)
    perturb_(method)
    with torch.no_grad():
        method.up_weight.zero_()
        method.up_bias.zero_()
        method.ln_weight.zero_()
    torch.testing.assert_close(method(), method.prompt + method.ln_bias)


def test_residual_shared_matches_torch_modules():
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


def test_residual_unshared_gives_each_token_its_own_mlp():
    method = build("residual", bottleneck=12, shared=False, n_tokens=3)
    perturb_(method)
    rows = []
    for i in range(3):
        h = torch.relu(method.prompt[i] @ method.down_weight[i] + method.down_bias[i])
        y = h @ method.up_weight[i] + method.up_bias[i]
        rows.append(F.layer_norm(y, (32,), method.ln_weight[i], method.ln_bias[i]) + method.prompt[i])
    torch.testing.assert_close(method(), torch.stack(rows))


# --- ptuning (Liu et al. 2021, PEFT's MLP encoder) -----------------------------------------

def test_ptuning_matches_peft_prompt_encoder():
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


def test_ptuning_hidden_zero_means_d_model():
    method = build("ptuning", d=40)
    assert method.hidden_size == 40 and method.mlp[0].weight.shape == (40, 40)


# --- ept -----------------------------------------------------------------------------------

def test_ept_broadcasts_one_vector():
    method = build("ept", n_tokens=10, hidden=4)
    out = method()
    assert out.shape == (10, 32)
    assert all(torch.equal(out[0], row) for row in out)
    torch.testing.assert_close(out[0], method.up @ (method.down @ method.vector))


def test_ept_vector_init_is_uniform_half():
    v = build("ept", d=1024).vector.detach()
    assert v.min() >= -0.5 and v.max() <= 0.5 and v.std() > 0.2
