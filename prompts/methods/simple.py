"""Vanilla soft prompt tuning: the prompt is an (n, e) matrix trained directly.

Lester, Al-Rfou and Constant, "The Power of Scale for Parameter-Efficient Prompt Tuning",
EMNLP 2021 (arXiv:2104.08691). Section 2.2 compares three initialisations, all offered here:
uniform random, "sampled vocab" (embeddings of tokens drawn from the 5,000 most common ones)
and "class label" (each prompt token starts as the embedding of a label word, multi-token
labels averaged, the remaining tokens from sampled vocab). ``artifact:PATH`` starts from
another task's prompt, as in SPoT (Vu et al., ACL 2022, arXiv:2110.07904).

The initialisation helpers the other methods share live in :mod:`spp.prompts.methods.init`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from spp.prompts.config import check_choice, option
from spp.prompts.methods.base import ConfigError, InitContext, MethodConfig, PromptMethod
from spp.prompts.methods.init import gather_embeddings, sample_vocab_prompt
from spp.prompts.methods.registry import register

ARTIFACT_PREFIX = "artifact:"
INIT_CHOICES = ("sample-vocab", "uniform", "labels", ARTIFACT_PREFIX + "PATH")


def label_prompt(n: int, ctx: InitContext) -> torch.Tensor:
    """Lester's "class label" init: label words first (mean over their tokens), rest sampled vocab."""
    if not ctx.label_token_ids:
        raise ConfigError("init='labels' needs the task's label token ids, but none were given")
    vocab = int(ctx.embedding.shape[0])
    rows = []
    for k, ids in enumerate(ctx.label_token_ids[:n]):
        if len(ids) == 0:
            raise ConfigError(f"init='labels': label {k} has no tokens")
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise ConfigError(f"init='labels': label {k} has token ids {bad} outside the vocabulary (size {vocab})")
        rows.append(gather_embeddings(ctx.embedding, torch.tensor(ids)).mean(dim=0))  # (e,)
    labels = torch.stack(rows)  # (min(n, L), e)
    rest = sample_vocab_prompt(n - labels.shape[0], ctx)  # (n - L, e), possibly empty
    return torch.cat([labels, rest])  # (n, e)


def artifact_prompt(n: int, ctx: InitContext) -> torch.Tensor:
    """The prompt the caller loaded from ``artifact:PATH`` (SPoT-style transfer init)."""
    if ctx.init_prompt is None:
        raise ConfigError("init='artifact:...' needs the loaded prompt (InitContext.init_prompt), but none was given")
    want = (n, ctx.d_model)
    got = tuple(ctx.init_prompt.shape)
    if got != want:
        raise ConfigError(
            f"init artifact prompt has shape {got} (n_tokens={got[0] if got else '?'}, "
            f"d_model={got[-1] if got else '?'}) but this method needs {want} "
            f"(n_tokens={n}, d_model={ctx.d_model})"
        )
    return ctx.init_prompt.detach().float().cpu().clone()  # (n, e)


@dataclass
class SimpleConfig(MethodConfig):
    """Prompt Tuning's options: n_tokens prompt vectors and their initialisation."""

    init: str = option(
        "sample-vocab",
        help="Prompt init: sample-vocab (Lester's default), uniform, labels (label-word embeddings), "
        "or artifact:PATH (another prompt, SPoT).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init.startswith(ARTIFACT_PREFIX):
            if not self.init[len(ARTIFACT_PREFIX):].strip():
                raise ConfigError("init='artifact:PATH' needs a path after 'artifact:'")
        else:
            check_choice("init", self.init, INIT_CHOICES[:-1], ConfigError)


@register
class SimplePrompt(PromptMethod):
    """Prompt Tuning (Lester et al. 2021): the (n, e) prompt is the parameter itself."""

    name: ClassVar[str] = "simple"
    config_cls: ClassVar[type[MethodConfig]] = SimpleConfig
    # The SuperPos-Prompt paper's setup for its Simple PT baseline: lr 0.01, AdamW weight decay 0.01.
    default_lr: ClassVar[float] = 0.01
    default_weight_decay: ClassVar[float] = 0.01
    summary: ClassVar[str] = "Prompt Tuning (Lester 2021): the n x e prompt itself; vocab/uniform/labels/artifact init"

    config: SimpleConfig

    def __init__(self, config: SimpleConfig, ctx: InitContext) -> None:
        super().__init__(config, ctx)
        n, init = config.n_tokens, config.init
        if init == "sample-vocab":
            start = sample_vocab_prompt(n, ctx)
        elif init == "uniform":
            start = torch.empty(n, self.d_model).uniform_(-0.5, 0.5, generator=ctx.generator)
        elif init == "labels":
            start = label_prompt(n, ctx)
        else:  # artifact:PATH, validated by SimpleConfig
            start = artifact_prompt(n, ctx)
        self.prompt = nn.Parameter(start)  # (n, e)

    def forward(self) -> torch.Tensor:
        return self.prompt  # (n, e)
