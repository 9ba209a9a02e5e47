"""SPoT's retrieval: rank published prompts as initialisations for a task by the similarity
of their prompt to a short probe prompt trained on that task (``spp transfer --recommend``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from spp.prompts.backbone import Backbone
from spp.prompts.config import check_choice, check_int
from spp.prompts.tasks.data import TaskData
from spp.prompts.transfer.compute import TransferError, TransferSource
from spp.prompts.transfer.similarity import SIMILARITIES, mean_cosine, token_cosine


@dataclass(frozen=True)
class Recommendation:
    """A candidate initialisation for a task, ranked by similarity to the task's probe prompt."""

    label: str
    task: str
    mean_cosine: float
    token_cosine: float


def rank_by_similarity(
    probe: torch.Tensor, candidates: Sequence[TransferSource], *, by: str = "mean_cosine"
) -> list[Recommendation]:
    """SPoT's retrieval: candidates sorted by similarity of their prompt to ``probe`` (n, e)."""
    check_choice("by", by, SIMILARITIES, TransferError)
    if not candidates:
        raise TransferError("no candidate prompts to rank")
    recs = [Recommendation(c.label, c.task, mean_cosine(probe, c.prompt), token_cosine(probe, c.prompt)) for c in candidates]
    return sorted(recs, key=lambda r: -getattr(r, by))


def train_probe(
    backbone: Backbone,
    train_data: TaskData,
    *,
    steps: int,
    n_tokens: int = 10,
    seed: int = 0,
    batch_size: int = 16,
    lr: float | None = None,
    on_event: Callable | None = None,
) -> torch.Tensor:
    """A short Prompt Tuning run on the task (SPoT's task embedding): the (n, e) probe prompt.

    ``on_event`` receives the trainer's TrainEvents (the CLI draws a progress bar from them).
    """
    from spp.prompts.train.trainer import TrainConfig, build_prompt_method, train

    check_int("probe steps", steps, TransferError)
    method = build_prompt_method(backbone, "simple", {"n_tokens": n_tokens}, train_data.task.label_words, seed=seed)
    config = TrainConfig(max_steps=steps, batch_size=batch_size, seed=seed, lr=lr)
    return train(backbone, method, {"train": train_data}, config, on_event=on_event).artifact.prompt  # (n, e)
