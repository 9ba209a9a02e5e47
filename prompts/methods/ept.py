"""EPT, Explosive Prompt Tuning: one vector through an underparameterized linear down-up map.

As described in the EPT paper (see DESIGN, "The papers"): a single prompt vector v (e,) drawn
from U[-0.5, 0.5] passes through Linear(e, h) then Linear(h, e), both without bias, with no
nonlinearity, no LayerNorm and no residual; h may be as small as 1. The result is broadcast to
n prompt tokens: n = 1 is EPT, n = 10 (the same vector repeated) is EPT*. Training uses AdamW
at lr 0.3 with weight decay 0.01 on every parameter.

Trainable parameters: e + e*h + h*e, e.g. 768 + 768 + 768 = 2,304 for T5-base at h = 1 (the
paper's "2.3K"), which is why neither layer has a bias.
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


@dataclass
class EPTConfig(MethodConfig):
    """EPT's options: one vector through an e -> h -> e linear bottleneck, repeated n times."""

    n_tokens: int = option(1, help="Copies of the one prompt vector (1 = EPT, 10 = EPT*).", min=1)
    hidden: int = option(1, help="Width h of the linear bottleneck (EPT: as small as 1).", min=1)


@register
class EPTPrompt(PromptMethod):
    """EPT: v -> W_up W_down v, repeated n times."""

    name: ClassVar[str] = "ept"
    config_cls: ClassVar[type[MethodConfig]] = EPTConfig
    default_lr: ClassVar[float] = 0.3
    default_weight_decay: ClassVar[float] = 0.01
    summary: ClassVar[str] = "EPT: one vector through a bias-free linear e->h->e map, repeated n times (EPT* n=10)"

    config: EPTConfig

    def __init__(self, config: EPTConfig, ctx: InitContext) -> None:
        super().__init__(config, ctx)
        e, h = self.d_model, config.hidden
        g = ctx.generator
        self.vector = nn.Parameter(torch.empty(e).uniform_(-0.5, 0.5, generator=g))  # (e,)
        # nn.Linear layout (out, in) and default init, drawn from the generator.
        self.down = nn.Parameter(fan_in_uniform_(torch.empty(h, e), e, g))  # (h, e)
        self.up = nn.Parameter(fan_in_uniform_(torch.empty(e, h), h, g))  # (e, h)

    def no_decay_names(self) -> set[str]:
        # The paper applies AdamW weight decay to everything; there are no biases or norms, and
        # the base rule (skip 1-D tensors) would wrongly exempt the prompt vector itself.
        return set()

    def forward(self) -> torch.Tensor:
        z = self.up @ (self.down @ self.vector)  # (e,)
        return z.unsqueeze(0).expand(self.n_tokens, -1)  # (n, e): the same row n times
