"""Residual Prompt Tuning: the prompt passes through a small residual MLP.

Razdaibiedina, Mao, Hou, Khabsa, Lewis, Ba and Almahairi, "Residual Prompt Tuning: Improving
Prompt Tuning with Residual Reparameterization", Findings of ACL 2023 (arXiv:2305.03937).

    p_i' = LayerNorm(W_up ReLU(W_down p_i + b_down) + b_up) + p_i

The prompt P (n, e) starts from Lester's sampled-vocab init. The paper's default shares one
MLP across all prompt tokens (``shared=True``); ``shared=False`` gives every token its own MLP.
Both are one batched computation over k MLPs (k = 1 or n) with stacked weights, so there is
no Python loop over tokens. The default bottleneck, 128, is the SuperPos-Prompt paper's
setting for this baseline; EPT's comparison used 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spp.prompts.config import option
from spp.prompts.methods.base import InitContext, MethodConfig, PromptMethod
from spp.prompts.methods.registry import register
from spp.prompts.methods.init import fan_in_uniform_, sample_vocab_prompt

LN_EPS = 1e-5  # nn.LayerNorm's default, as in the paper's code


@dataclass
class ResidualConfig(MethodConfig):
    """Residual PT's options (SuperPos-Prompt's setup: bottleneck 128; EPT's comparison: 400)."""

    bottleneck: int = option(128, help="Hidden width of the residual MLP.", min=1)
    shared: bool = option(True, help="One MLP shared by all prompt tokens (the paper) rather than one per token.")


@register
class ResidualPrompt(PromptMethod):
    """Residual Prompt Tuning (Razdaibiedina et al. 2023): LN(up(ReLU(down(P)))) + P."""

    name: ClassVar[str] = "residual"
    config_cls: ClassVar[type[MethodConfig]] = ResidualConfig
    # The SuperPos-Prompt paper's setup for Residual PT: lr 0.3, AdamW weight decay 0.01.
    default_lr: ClassVar[float] = 0.3
    default_weight_decay: ClassVar[float] = 0.01
    summary: ClassVar[str] = "Residual Prompt Tuning (2023): prompt + LayerNorm(MLP(prompt)), bottleneck MLP"

    config: ResidualConfig

    def __init__(self, config: ResidualConfig, ctx: InitContext) -> None:
        super().__init__(config, ctx)
        n, e, b = config.n_tokens, self.d_model, config.bottleneck
        k = 1 if config.shared else n  # number of MLPs
        g = ctx.generator
        self.prompt = nn.Parameter(sample_vocab_prompt(n, ctx))  # (n, e)
        # Weights are stored (in, out) so that x @ W applies them; the init matches nn.Linear's.
        self.down_weight = nn.Parameter(fan_in_uniform_(torch.empty(k, e, b), e, g))  # (k, e, b)
        self.down_bias = nn.Parameter(fan_in_uniform_(torch.empty(k, b), e, g))  # (k, b)
        self.up_weight = nn.Parameter(fan_in_uniform_(torch.empty(k, b, e), b, g))  # (k, b, e)
        self.up_bias = nn.Parameter(fan_in_uniform_(torch.empty(k, e), b, g))  # (k, e)
        self.ln_weight = nn.Parameter(torch.ones(k, e))  # (k, e)
        self.ln_bias = nn.Parameter(torch.zeros(k, e))  # (k, e)

    def no_decay_names(self) -> set[str]:
        # Biases and LayerNorm take no weight decay (the usual AdamW split). They are 2-D here
        # because of the stacked k dimension, so the base class's ndim rule would miss them.
        return {"down_bias", "up_bias", "ln_weight", "ln_bias"}

    def forward(self) -> torch.Tensor:
        x = self.prompt.unsqueeze(1)  # (n, 1, e)
        # (n, 1, e) @ (k, e, b) broadcasts over k = 1 (shared) or pairs token i with MLP i.
        h = torch.relu(x @ self.down_weight + self.down_bias.unsqueeze(1))  # (n, 1, b)
        y = (h @ self.up_weight).squeeze(1) + self.up_bias  # (n, e)
        y = F.layer_norm(y, (self.d_model,), eps=LN_EPS) * self.ln_weight + self.ln_bias  # (n, e)
        return y + self.prompt  # (n, e): skip connection
