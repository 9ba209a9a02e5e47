"""SuperPos-Prompt: each prompt token is a superposition of m frozen token embeddings.

Sadraei Javaheri, Asgari, McHardy and Rabiee, "SuperPos-Prompt: Enhancing Soft Prompt Tuning
of Language Models with Superposition of Multi Token Embeddings", arXiv:2406.05279 (2024).

    p_i = (E_freeze + ΔE_i) p'_i                      i = 1..n

E_freeze (e, m) holds m unique token embeddings sampled once from the backbone's embedding
matrix and shared by all prompt tokens; it is a persistent buffer (saved with the state, never
trained). ΔE_i (e, m) starts at zero and p'_i (m,) are trained. ``softmax=True`` is the
paper's ablation p_i = (E_freeze + ΔE_i) softmax(p'_i), which it reports as worse.

Initialisation of p' (the paper fixes ΔE = 0 but not p'): p'_i ~ N(0, 1/m). With ΔE = 0 the
prompt token is E_freeze p'_i, and for any fixed E (e, m) and p ~ N(0, σ² I_m)

    E ||E p||² = σ² tr(Eᵀ E) = σ² ||E||_F² = σ² m · mean_j ||E[:, j]||²,

so σ² = 1/m makes the expected squared norm of every initial prompt token equal to the mean
squared norm of the sampled token embeddings: the prompt starts at the scale of real tokens
whatever the backbone's embedding scale (T5 v1.1 LM-adapted embeddings are far from unit norm),
as a random mix of them rather than a copy of any single one. Under the softmax ablation the
same p' gives near-uniform weights, i.e. each token starts near the mean of E_freeze.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from spp.prompts.config import option
from spp.prompts.methods.base import ConfigError, InitContext, MethodConfig, PromptMethod
from spp.prompts.methods.registry import register
from spp.prompts.methods.init import gather_embeddings, sample_vocab_ids


@dataclass
class SuperPosConfig(MethodConfig):
    """SuperPos-Prompt's options (the paper: m=128, no softmax)."""

    m: int = option(128, help="Frozen token embeddings E_freeze mixed per prompt token.", min=1)
    softmax: bool = option(False, help="Softmax over the superposition weights p' (the paper's ablation; worse).")


@register
class SuperPosPrompt(PromptMethod):
    """SuperPos-Prompt (arXiv:2406.05279): p_i = (E_freeze + ΔE_i) p'_i."""

    name: ClassVar[str] = "superpos"
    config_cls: ClassVar[type[MethodConfig]] = SuperPosConfig
    # The paper's setup: lr 0.01, AdamW weight decay 1e-5, no scheduler.
    default_lr: ClassVar[float] = 0.01
    default_weight_decay: ClassVar[float] = 1e-5
    summary: ClassVar[str] = "SuperPos-Prompt (2024): each token mixes m frozen vocab embeddings plus a trained delta"

    config: SuperPosConfig
    E_freeze: torch.Tensor

    def __init__(self, config: SuperPosConfig, ctx: InitContext) -> None:
        super().__init__(config, ctx)
        n, e, m = config.n_tokens, self.d_model, config.m
        vocab = int(ctx.embedding.shape[0])
        if m > vocab:
            raise ConfigError(f"m={m} exceeds the backbone's vocabulary size {vocab}; m must be <= {vocab}")
        ids = sample_vocab_ids(m, vocab, ctx.generator, top=None)  # (m,) unique
        frozen = gather_embeddings(ctx.embedding, ids).T.contiguous()  # (e, m)
        self.register_buffer("E_freeze", frozen, persistent=True)  # in the state, never trained
        self.delta = nn.Parameter(torch.zeros(n, e, m))  # (n, e, m): ΔE_i, zero at start
        p = torch.randn(n, m, generator=ctx.generator) / math.sqrt(m)  # (n, m): see module docstring
        self.p_prime = nn.Parameter(p)  # (n, m): p'_i

    def weights(self) -> torch.Tensor:
        """The mixing weights actually applied: p' or, for the ablation, softmax(p')."""
        return torch.softmax(self.p_prime, dim=-1) if self.config.softmax else self.p_prime  # (n, m)

    def forward(self) -> torch.Tensor:
        w = self.weights()  # (n, m)
        # (E + ΔE_i) w_i = E w_i + ΔE_i w_i: never materialises the (n, e, m) sum E + ΔE.
        base = w @ self.E_freeze.T  # (n, e)
        return base + torch.einsum("nem,nm->ne", self.delta, w)  # (n, e)
