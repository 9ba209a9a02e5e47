"""Base class and config of every soft-prompt method.

Every method is an ``nn.Module`` whose ``forward()`` returns the ``(n, e)`` prompt that is
prepended to the encoder input. Methods register themselves by name in
:mod:`spp.prompts.methods.registry`; nothing else branches on method names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from spp.prompts.config import option, validate
from spp.prompts.errors import ConfigError


@dataclass
class MethodConfig:
    """Options shared by every method. Subclasses add their own :func:`option` fields (help
    text and bounds on the field: ``spp train`` generates its method flags from them)."""

    n_tokens: int = option(10, help="Prompt length n (tokens prepended to the encoder input).", min=1)

    def __post_init__(self) -> None:
        validate(self, ConfigError)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MethodConfig":
        """Build from a mapping; unknown keys raise a ConfigError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown option(s) for this method: {', '.join(unknown)} (valid: {', '.join(sorted(names))})"
            )
        return cls(**values)


@dataclass
class InitContext:
    """What a method may need to initialise itself.

    embedding: the backbone's input embedding matrix (V, e), never modified.
    label_token_ids: token ids of each label word (for ``init=labels``).
    init_prompt: an (n, e) prompt to start from (SPoT init / ``artifact:PATH``).
    sources: (k, n, e) source prompts (ATTEMPT).
    """

    embedding: torch.Tensor
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    label_token_ids: list[list[int]] = field(default_factory=list)
    init_prompt: torch.Tensor | None = None
    sources: torch.Tensor | None = None

    @property
    def d_model(self) -> int:
        return int(self.embedding.shape[1])


class PromptMethod(nn.Module):
    """A soft-prompt parameterisation. Subclasses set the ClassVars and implement forward."""

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]]
    default_lr: ClassVar[float]
    default_weight_decay: ClassVar[float]
    summary: ClassVar[str] = ""

    def __init__(self, config: MethodConfig, ctx: InitContext) -> None:
        super().__init__()
        self.config = config
        self.d_model = ctx.d_model

    @property
    def n_tokens(self) -> int:
        return self.config.n_tokens

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def collapse(self) -> torch.Tensor:
        """The final (n, e) prompt, detached, float32, on CPU: all that serving needs."""
        return self().detach().float().cpu().contiguous()

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def no_decay_names(self) -> set[str]:
        """Parameter names excluded from weight decay (biases and LayerNorm by default)."""
        return {n for n, p in self.named_parameters() if p.ndim < 2}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: decayed and non-decayed parameters."""
        skip = self.no_decay_names()
        decay = [p for n, p in self.named_parameters() if p.requires_grad and n not in skip]
        no_decay = [p for n, p in self.named_parameters() if p.requires_grad and n in skip]
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The method's own tensors (parameters and buffers), for resuming; CPU float32."""
        return {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({k: v for k, v in tensors.items()}, strict=True)
