"""ATTEMPT: an attention mixture over frozen source prompts plus a trainable target prompt.

Asai, Salehi, Peters and Hajishirzi, "ATTEMPT: Parameter-Efficient Multi-task Tuning via
Attentional Mixtures of Soft Prompts", EMNLP 2022 (arXiv:2205.11961). In the paper, for an
input X with max-pooled token embeddings x̂, and prompts P_1..P_k (sources, frozen) and
P_t (target, trained), each max-pooled over its tokens to P̂_j:

    h   = LayerNorm(W_up SiLU(W_down x̂))                  (bottleneck 100, no biases)
    a_j = softmax_j(P̂_j · h / T)   over j in [sources; target]   (T = d_model * e)
    P   = P_t + sum_j a_j P_j

DEVIATION (input-independent variant): spp methods expose ONE (n, e) prompt from
``forward()`` with no input, so that a prompt collapses to a single matrix that the registry
stores and the server mixes into batches. The query of the attention is therefore the
max-pooled *target prompt* P̂_t instead of the input's x̂; everything else (sub-network,
LayerNorm, max-pooled keys, temperature, the mixture including the target, the residual
P_t) is as in the authors' code. The attention weights are thus learned per task, not per
instance: ATTEMPT's instance-wise routing is lost, its learned task-level mixture is kept.

Sources come from :attr:`InitContext.sources` as a (k, n, e) tensor (e.g. published prompts
from the registry); they must all have the target's n_tokens, because ATTEMPT sums whole
prompts. They are kept as a buffer (saved with the state for resuming, never trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spp.prompts.config import check_number, option
from spp.prompts.methods.base import ConfigError, InitContext, MethodConfig, PromptMethod
from spp.prompts.methods.registry import register
from spp.prompts.methods.init import sample_vocab_prompt

LN_EPS = 1e-5  # nn.LayerNorm's default, used by the authors' code
INIT_STD = 0.01  # the authors' init of their added Linear layers (normal, std 0.01)
TARGET_INITS = ("sample-vocab", "uniform")


@dataclass
class AttemptConfig(MethodConfig):
    """ATTEMPT's options (the authors' code: bottleneck 100, temperature d_model * e)."""

    bottleneck: int = option(100, help="Width of the attention sub-network.", min=1)
    temperature: float | None = option(
        None, help="Softmax temperature of the attention; default d_model * e (the authors' 2087 on T5-base).", min=0,
    )
    init: str = option("sample-vocab", help="Init of the target prompt.", choices=TARGET_INITS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature is not None:
            check_number("temperature", self.temperature, ConfigError, above=0)


def stack_sources(prompts: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
    """Stack source prompts (each (n, e)) into the (k, n, e) tensor ATTEMPT takes.

    All must share n and e (ATTEMPT sums whole prompts); the message names the odd one out.
    """
    if not prompts:
        raise ConfigError("attempt needs at least one source prompt")
    names = list(names) if names is not None else [f"source {i}" for i in range(len(prompts))]
    first = tuple(prompts[0].shape)
    for name, p in zip(names, prompts):
        if p.ndim != 2 or tuple(p.shape) != first:
            raise ConfigError(
                f"attempt source prompts must all have the same shape (n_tokens, d_model); "
                f"{names[0]} is {first}, {name} is {tuple(p.shape)}"
            )
    return torch.stack([p.detach().float().cpu() for p in prompts])  # (k, n, e)


@register
class AttemptPrompt(PromptMethod):
    """ATTEMPT (Asai et al. 2022), input-independent: P_t + sum_j softmax(P̂_j·h/T)_j P_j."""

    name: ClassVar[str] = "attempt"
    config_cls: ClassVar[type[MethodConfig]] = AttemptConfig
    # The authors' single-task config: lr 0.3; HF Trainer's default weight decay (0).
    default_lr: ClassVar[float] = 0.3
    default_weight_decay: ClassVar[float] = 0.0
    summary: ClassVar[str] = "ATTEMPT (2022): attention mixture of frozen source prompts + a trained target prompt"

    config: AttemptConfig

    def __init__(self, config: AttemptConfig, ctx: InitContext) -> None:
        super().__init__(config, ctx)
        n, e, b = config.n_tokens, self.d_model, config.bottleneck
        sources = self._check_sources(ctx.sources, n, e)
        g = ctx.generator
        if config.init == "sample-vocab":
            start = sample_vocab_prompt(n, ctx)
        else:
            start = torch.empty(n, e).uniform_(-0.5, 0.5, generator=g)
        self.prompt = nn.Parameter(start)  # (n, e): the target prompt P_t
        self.register_buffer("sources", sources)  # (k, n, e), frozen
        self.down_weight = nn.Parameter(torch.empty(e, b).normal_(0.0, INIT_STD, generator=g))  # (e, b)
        self.up_weight = nn.Parameter(torch.empty(b, e).normal_(0.0, INIT_STD, generator=g))  # (b, e)
        self.ln_weight = nn.Parameter(torch.ones(e))  # (e,)
        self.ln_bias = nn.Parameter(torch.zeros(e))  # (e,)
        self.temperature = float(config.temperature) if config.temperature is not None else e * math.e

    @staticmethod
    def _check_sources(sources: torch.Tensor | None, n: int, e: int) -> torch.Tensor:
        if sources is None:
            raise ConfigError("attempt needs source prompts (InitContext.sources, e.g. --sources REF,...)")
        if sources.ndim != 3 or sources.shape[0] < 1:
            raise ConfigError(f"attempt sources must be a (k, n, e) tensor with k >= 1, got shape {tuple(sources.shape)}")
        k, ns, es = sources.shape
        if es != e:
            raise ConfigError(f"attempt source prompts have d_model {es}, the backbone has {e}")
        if ns != n:
            raise ConfigError(
                f"attempt source prompts have {ns} tokens but n_tokens={n}; ATTEMPT sums whole prompts, "
                f"so set n_tokens={ns}"
            )
        if not torch.isfinite(sources).all():
            raise ConfigError("attempt source prompts contain NaN or infinite values")
        return sources.detach().float().clone()

    @property
    def num_sources(self) -> int:
        return int(self.sources.shape[0])

    def attention(self) -> torch.Tensor:
        """The mixture weights a (k + 1,) over [sources; target], summing to 1."""
        prompts = torch.cat([self.sources, self.prompt.unsqueeze(0)])  # (k+1, n, e)
        keys = prompts.max(dim=1).values  # (k+1, e): max-pool over tokens, as the authors
        query = self.prompt.max(dim=0).values  # (e,): the target prompt stands in for the input
        h = F.silu(query @ self.down_weight) @ self.up_weight  # (e,)
        h = F.layer_norm(h, (self.d_model,), self.ln_weight, self.ln_bias, eps=LN_EPS)  # (e,)
        return torch.softmax(keys @ h / self.temperature, dim=0)  # (k+1,)

    def forward(self) -> torch.Tensor:
        prompts = torch.cat([self.sources, self.prompt.unsqueeze(0)])  # (k+1, n, e)
        mix = torch.einsum("k,kne->ne", self.attention(), prompts)  # (n, e)
        return self.prompt + mix  # (n, e)
