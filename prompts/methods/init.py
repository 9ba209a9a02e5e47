"""Initialisation helpers shared by the prompt methods.

Lester et al. 2021 (arXiv:2104.08691, section 2.2) initialise prompts from "sampled vocab":
embeddings of tokens drawn from the 5,000 most common ones. SuperPos-Prompt samples its m
frozen embeddings the same way, Residual PT starts from such a prompt, and the small MLPs of
P-Tuning, Residual PT and EPT use PyTorch's default Linear bound drawn from a seeded generator.
"""

from __future__ import annotations

import math

import torch

from spp.prompts.methods.base import ConfigError, InitContext

# Lester et al. sample from the 5,000 most common tokens; SentencePiece vocabularies (T5's)
# are ordered by frequency, so these are the first 5,000 ids.
SAMPLED_VOCAB_TOP = 5000


def sample_vocab_ids(
    n: int, vocab_size: int, generator: torch.Generator, top: int | None = SAMPLED_VOCAB_TOP
) -> torch.Tensor:
    """``n`` token ids drawn without replacement from the first ``top`` ids (all when None).

    Ids are unique whenever the pool is large enough; only a pool smaller than ``n`` (a toy
    vocabulary) forces repeats, and then every id is used before any repeats.
    """
    pool = vocab_size if top is None else min(top, vocab_size)
    if pool < 1:
        raise ConfigError(f"cannot sample token ids from an empty vocabulary (vocab_size={vocab_size})")
    rounds = max(1, math.ceil(n / pool))
    ids = torch.cat([torch.randperm(pool, generator=generator) for _ in range(rounds)])
    return ids[:n]  # (n,)


def gather_embeddings(embedding: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of the embedding matrix as a detached CPU float32 copy."""
    return embedding.detach()[ids.to(embedding.device)].float().cpu().clone()  # (len(ids), e)


def sample_vocab_prompt(n: int, ctx: InitContext) -> torch.Tensor:
    """Lester's "sampled vocab" init: embeddings of n tokens from the top of the vocabulary."""
    ids = sample_vocab_ids(n, int(ctx.embedding.shape[0]), ctx.generator)
    return gather_embeddings(ctx.embedding, ids)  # (n, e)


def fan_in_uniform_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) in place: PyTorch's default nn.Linear init
    (kaiming_uniform with a=sqrt(5) for weights, the same bound for biases), but drawn from
    ``generator`` so that one seed gives one initialisation."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)
