"""Shared helpers of the method tests, as fixtures: a fixed init context, a method builder,
and a perturbation that moves parameters away from their init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spp.prompts import methods as base
from spp.prompts.methods import InitContext, build_method

VOCAB = 600  # test_methods and test_formulas rely on this vocabulary size


def _make_ctx(d: int = 32, vocab: int = VOCAB, seed: int = 0, **kwargs) -> InitContext:
    """A context with everything a method may ask for; the embedding is random but fixed."""
    emb = torch.randn(vocab, d, generator=torch.Generator().manual_seed(1234)) * 3.0  # (V, e)
    kwargs.setdefault("label_token_ids", [[5, 6], [7]])
    kwargs.setdefault("sources", torch.randn(3, 10, d, generator=torch.Generator().manual_seed(99)))
    return InitContext(embedding=emb, generator=torch.Generator().manual_seed(seed), **kwargs)


def _build(name: str, d: int = 32, seed: int = 0, **options) -> base.PromptMethod:
    n = options.get("n_tokens")
    extra = {}
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:  # ATTEMPT mixes whole prompts: sources need n
        extra["sources"] = torch.randn(3, n, d, generator=torch.Generator().manual_seed(99))
    return build_method(name, options, _make_ctx(d=d, seed=seed, **extra))


def _perturb_(method: nn.Module, seed: int = 7) -> None:
    """Move every parameter away from its init so tests do not pass by re-initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)




@pytest.fixture
def make_ctx():
    return _make_ctx


@pytest.fixture
def build():
    return _build


@pytest.fixture
def perturb_():
    return _perturb_
