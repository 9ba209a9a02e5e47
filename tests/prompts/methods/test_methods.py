"""Behaviour of every soft-prompt method: shapes, parameter counts, init, state, errors."""

from __future__ import annotations

import json

import pytest
import torch

from spp.prompts import methods as base
from spp.prompts.methods import ConfigError, build_method, get_method, method_names

VOCAB = 600  # the conftest context's vocabulary size
EXPECTED = {"simple", "superpos", "residual", "ptuning", "ept"}

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
def test_trainable_count_defaults(name, d, build):
    method = build(name, d=d)
    assert method.num_trainable() == _count_defaults(name, d)


@pytest.mark.parametrize("d", [512, 768, 1024])
@pytest.mark.parametrize("name,options,formula", NON_DEFAULT)
def test_trainable_count_options(name, options, formula, d, build):
    assert build(name, d=d, **options).num_trainable() == formula(d)


def test_ept_matches_the_papers_2_3k_on_t5_base(build):
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
def test_forward_shape_and_dtype(name, n, build):
    out = build(name, d=48, n_tokens=n)()
    assert out.shape == (n, 48)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", method_names())
def test_collapse_equals_forward(name, build, perturb_):
    method = build(name)
    perturb_(method)
    collapsed = method.collapse()
    assert not collapsed.requires_grad
    assert collapsed.device.type == "cpu" and collapsed.dtype == torch.float32
    assert collapsed.is_contiguous()
    torch.testing.assert_close(collapsed, method().detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", method_names())
def test_same_seed_same_init_other_seed_differs(name, build):
    a, b, c = build(name, seed=3), build(name, seed=3), build(name, seed=4)
    torch.testing.assert_close(a(), b(), rtol=0, atol=0)
    for (ka, va), (kb, vb) in zip(a.state_tensors().items(), b.state_tensors().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    assert not torch.equal(a(), c())


@pytest.mark.parametrize("name", method_names())
def test_init_leaves_global_rng_and_embedding_alone(name, make_ctx, perturb_):
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
def test_state_round_trip_into_fresh_instance(name, build, perturb_):
    trained = build(name, seed=0)
    perturb_(trained)
    state = trained.state_tensors()
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values())
    fresh = build(name, seed=1)
    assert not torch.equal(fresh(), trained())
    fresh.load_state_tensors(state)
    torch.testing.assert_close(fresh(), trained(), rtol=0, atol=0)


@pytest.mark.parametrize("name", method_names())
def test_load_state_rejects_missing_tensor(name, build):
    method = build(name)
    state = method.state_tensors()
    state.pop(next(iter(state)))
    with pytest.raises(RuntimeError):
        build(name, seed=1).load_state_tensors(state)


@pytest.mark.parametrize("name", method_names())
def test_param_groups_cover_each_parameter_once(name, build):
    method = build(name)
    groups = method.param_groups(0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in method.parameters() if p.requires_grad)
    assert groups[0]["weight_decay"] == 0.05
    assert all(g["weight_decay"] == 0.0 for g in groups[1:])


def _decayed_names(method) -> set[str]:
    decayed = {id(p) for p in method.param_groups(0.1)[0]["params"]}
    return {n for n, p in method.named_parameters() if id(p) in decayed}


def test_weight_decay_split_per_method(build):
    assert _decayed_names(build("simple")) == {"prompt"}
    assert _decayed_names(build("superpos")) == {"delta", "p_prime"}
    assert _decayed_names(build("ept")) == {"vector", "down", "up"}  # everything, vector included
    for shared in (True, False):
        assert _decayed_names(build("residual", shared=shared)) == {"prompt", "down_weight", "up_weight"}
    assert _decayed_names(build("ptuning")) == {"embedding", "mlp.0.weight", "mlp.2.weight", "mlp.4.weight"}


@pytest.mark.parametrize("name", method_names())
def test_gradients_reach_every_trainable_parameter(name, build):
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
def test_zero_tokens_rejected(name, build):
    with pytest.raises(ConfigError, match="n_tokens"):
        build(name, n_tokens=0)


@pytest.mark.parametrize("name", method_names())
def test_unknown_option_rejected_by_build_method(name, build):
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
def test_invalid_option_names_the_field(name, options, field, build):
    with pytest.raises(ConfigError, match=field):
        build(name, **options)


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError, match="superpos"):
        get_method("nope")
