"""ATTEMPT (Asai et al. 2022), input-independent variant: formula, parameters, errors, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spp.prompts.artifact import load_artifact, save_artifact
from spp.prompts.methods.attempt import AttemptPrompt, stack_sources
from spp.prompts.methods import ConfigError, InitContext, build_method, get_method
from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import load_splits
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.scoring import Scorer
from spp.prompts.train.trainer import TrainConfig, build_prompt_method, train


def ctx(e: int = 16, k: int = 3, n: int = 5, seed: int = 0, **kwargs) -> InitContext:
    g = torch.Generator().manual_seed(100)
    kwargs.setdefault("sources", torch.randn(k, n, e, generator=g))
    return InitContext(embedding=torch.randn(300, e, generator=g), generator=torch.Generator().manual_seed(seed),
                       **kwargs)


def attempt(e: int = 16, k: int = 3, n: int = 5, **options) -> AttemptPrompt:
    return build_method("attempt", {"n_tokens": n, **options}, ctx(e=e, k=k, n=n))


def reference(m: AttemptPrompt) -> torch.Tensor:
    """The authors' "sub" attention written with torch modules, the target prompt as query."""
    e, b = m.d_model, m.config.bottleneck
    down, up, ln = nn.Linear(e, b, bias=False), nn.Linear(b, e, bias=False), nn.LayerNorm(e)
    with torch.no_grad():
        down.weight.copy_(m.down_weight.T)
        up.weight.copy_(m.up_weight.T)
        ln.weight.copy_(m.ln_weight)
        ln.bias.copy_(m.ln_bias)
    mixture = torch.cat([m.sources, m.prompt.unsqueeze(0)])  # (k+1, n, e)
    pooled, _ = torch.max(mixture, 1)  # (k+1, e)
    query, _ = torch.max(m.prompt, 0)  # (e,)
    x = ln(up(nn.SiLU()(down(query))))  # (e,)
    weights = torch.softmax(pooled @ x / (e * math.e), -1)  # (k+1,)
    return m.prompt + torch.einsum("p,pld->ld", weights, mixture)


def perturb_(m: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def test_forward_matches_the_papers_sub_attention_with_the_target_as_query():
    m = attempt()
    perturb_(m)
    torch.testing.assert_close(m(), reference(m), rtol=1e-5, atol=1e-6)


def test_attention_is_a_distribution_over_sources_and_target():
    m = attempt(k=4)
    perturb_(m)
    a = m.attention()
    assert a.shape == (5,) and torch.all(a > 0)
    assert float(a.detach().sum()) == pytest.approx(1.0)


def test_default_temperature_is_d_model_times_e_and_a_huge_one_averages():
    assert int(attempt(e=768).temperature) == 2087  # 768 * e: the authors' config value for T5-base
    m = attempt(temperature=1e12)
    perturb_(m)
    everyone = torch.cat([m.sources, m.prompt.detach().unsqueeze(0)])  # (k+1, n, e)
    torch.testing.assert_close(m(), m.prompt + everyone.mean(0), rtol=1e-5, atol=1e-6)


def test_sources_are_a_frozen_buffer_and_the_trainable_count_is_closed_form():
    e, n, b = 32, 5, 100
    m = attempt(e=e, n=n)
    assert "sources" in dict(m.named_buffers()) and "sources" not in dict(m.named_parameters())
    assert m.num_trainable() == n * e + e * b + b * e + 2 * e  # P_t, W_down, W_up, LayerNorm
    assert m.num_sources == 3
    assert set(m.state_tensors()) == {"prompt", "sources", "down_weight", "up_weight", "ln_weight", "ln_bias"}
    out = m()
    (out * torch.randn(out.shape)).sum().backward()
    assert m.sources.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_sources_are_copied_not_aliased():
    c = ctx()
    m = build_method("attempt", {"n_tokens": 5}, c)
    c.sources.add_(1.0)
    assert not torch.equal(m.sources, c.sources)


def test_paper_defaults():
    cls = get_method("attempt")
    assert cls.default_lr == 0.3 and cls.default_weight_decay == 0.0
    assert cls.config_cls().bottleneck == 100 and cls.config_cls().temperature is None


@pytest.mark.parametrize("options,match", [
    ({"bottleneck": 0}, "bottleneck"),
    ({"temperature": 0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"init": "labels"}, "init"),
])
def test_bad_options_name_the_field(options, match):
    with pytest.raises(ConfigError, match=match):
        attempt(**options)


def test_source_errors_are_clear():
    with pytest.raises(ConfigError, match="needs source prompts"):
        build_method("attempt", {"n_tokens": 5}, ctx(sources=None))
    with pytest.raises(ConfigError, match="have 5 tokens but n_tokens=4; .* set n_tokens=5"):
        build_method("attempt", {"n_tokens": 4}, ctx(n=5))
    with pytest.raises(ConfigError, match="d_model 8, the backbone has 16"):
        build_method("attempt", {"n_tokens": 5}, ctx(sources=torch.randn(2, 5, 8)))
    with pytest.raises(ConfigError, match="k >= 1"):
        build_method("attempt", {"n_tokens": 5}, ctx(sources=torch.randn(0, 5, 16)))
    with pytest.raises(ConfigError, match="NaN"):
        build_method("attempt", {"n_tokens": 5}, ctx(sources=torch.full((1, 5, 16), float("nan"))))


def test_stack_sources_checks_shapes_and_names_the_odd_one():
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    stacked = stack_sources([a, b], ["rte@1", "cb@2"])
    assert stacked.shape == (2, 5, 16) and torch.equal(stacked[1], b)
    with pytest.raises(ConfigError, match="rte@1 is \\(5, 16\\), cb@2 is \\(4, 16\\)"):
        stack_sources([a, torch.randn(4, 16)], ["rte@1", "cb@2"])
    with pytest.raises(ConfigError, match="at least one"):
        stack_sources([])


def test_attempt_trains_on_a_backbone_and_exports_a_collapsed_prompt(tiny_backbone, demo_data, tmp_path):
    spec = get_task(demo_data["topic"])
    splits = load_splits(spec, max_train=64, max_eval=20)
    sources = torch.randn(2, 4, tiny_backbone.d_model, generator=torch.Generator().manual_seed(1))  # (k, n, e)
    method = build_prompt_method(tiny_backbone, "attempt", {"n_tokens": 4}, spec.label_words, seed=0, sources=sources)
    start = {k: v.clone() for k, v in method.state_tensors().items()}
    result = train(tiny_backbone, method, splits, TrainConfig(max_steps=3, batch_size=8, eval_every=3))
    art = result.artifact
    assert art.meta.method == "attempt" and art.meta.n_tokens == 4
    assert art.meta.trainable_params == method.num_trainable()
    assert art.meta.method_config == {"n_tokens": 4, "bottleneck": 100, "temperature": None, "init": "sample-vocab"}
    torch.testing.assert_close(art.prompt, method.collapse(), rtol=0, atol=0)
    assert torch.equal(art.state["sources"], sources)  # never trained
    assert not torch.equal(art.state["prompt"], start["prompt"]) and not torch.equal(art.state["up_weight"],
                                                                                      start["up_weight"])
    path = save_artifact(art, tmp_path / "a.safetensors")
    loaded = load_artifact(path)
    # Like any method: the collapsed prompt alone reproduces the recorded metrics.
    assert evaluate_prompt(Scorer(tiny_backbone), loaded.prompt, splits["test"]) == art.meta.metrics["test"]
    fresh = build_prompt_method(tiny_backbone, "attempt", {"n_tokens": 4}, spec.label_words, seed=5, sources=sources)
    fresh.load_state_tensors(loaded.state)  # resumable from the stored state
    torch.testing.assert_close(fresh.collapse(), loaded.prompt, rtol=0, atol=0)
