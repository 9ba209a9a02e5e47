"""P-Tuning: trainable prompt embeddings re-encoded by an MLP prompt encoder.

Liu, Zheng, Du, Ding, Qian, Yang and Tang, "GPT Understands, Too", arXiv:2103.10385 (2021).
The encoder follows Hugging Face PEFT's default ``PromptEncoder`` (reparameterization "MLP"):

    P' = Linear(h, e)(ReLU(Linear(h, h)(ReLU(Linear(e, h)(P)))))

with P an (n, e) embedding table drawn from N(0, 1) as ``nn.Embedding`` (and so PEFT) does.
``hidden=0`` means h = d_model, PEFT's default ``encoder_hidden_size``. The encoder is only
needed while training: :meth:`collapse` gives the (n, e) prompt that serving uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from spp.prompts.config import option
from spp.prompts.methods.base import InitContext, MethodConfig, PromptMethod
from spp.prompts.methods.registry import register
from spp.prompts.methods.init import fan_in_uniform_


def _linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    """An nn.Linear with PyTorch's default init drawn from ``generator`` (the global RNG is
    left untouched: skip_init builds the module without initialising it)."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    fan_in_uniform_(layer.weight, fan_in, generator)
    fan_in_uniform_(layer.bias, fan_in, generator)
    return layer


@dataclass
class PTuningConfig(MethodConfig):
    """P-Tuning's options (PEFT's default MLP encoder)."""

    hidden: int = option(0, help="Width of the encoder MLP; 0 = the backbone's d_model (PEFT's default).", min=0)


@register
class PTuningPrompt(PromptMethod):
    """P-Tuning (Liu et al. 2021) with PEFT's three-layer MLP prompt encoder."""

    name: ClassVar[str] = "ptuning"
    config_cls: ClassVar[type[MethodConfig]] = PTuningConfig
    # 1e-3: PEFT's P-tuning task guide trains this encoder with AdamW at lr 1e-3. The raw-prompt
    # rates (0.3, 0.01) are far too large for a 3-layer MLP of ~3e² weights, and the paper's
    # own small SuperGLUE rates were for tuning the language model too, not a frozen one.
    default_lr: ClassVar[float] = 1e-3
    default_weight_decay: ClassVar[float] = 0.01
    summary: ClassVar[str] = "P-Tuning (Liu 2021): prompt embeddings through PEFT's 3-layer ReLU MLP encoder"

    config: PTuningConfig

    def __init__(self, config: PTuningConfig, ctx: InitContext) -> None:
        super().__init__(config, ctx)
        n, e = config.n_tokens, self.d_model
        h = config.hidden or e
        g = ctx.generator
        self.embedding = nn.Parameter(torch.randn(n, e, generator=g))  # (n, e)
        self.mlp = nn.Sequential(_linear(e, h, g), nn.ReLU(), _linear(h, h, g), nn.ReLU(), _linear(h, e, g))

    @property
    def hidden_size(self) -> int:
        return self.config.hidden or self.d_model

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding)  # (n, e)
