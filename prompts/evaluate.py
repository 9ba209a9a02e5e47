"""Evaluate a prompt on a task split: rank classification (default) or free generation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Literal

import torch

from spp.prompts.tasks.data import TaskData
from spp.prompts.tasks.metrics import compute_metrics
from spp.prompts.scoring import LabelSet, Scorer, ScoreFn, iter_batches, score_texts
from spp.prompts.tasks.spec import TaskError

Mode = Literal["rank", "generate"]


def evaluate_prompt(
    scorer: Scorer,
    prompt: torch.Tensor,
    data: TaskData,
    *,
    mode: Mode = "rank",
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    score: ScoreFn | None = None,
) -> dict[str, float]:
    """Metrics of ``prompt`` (n, e) on ``data``; generate mode adds ``invalid_rate``. Rank mode
    scores each batch through ``score`` (default ``scorer.score``; e.g. a ShardedScore of it).

    In generate mode an output that is not one of the label words counts as wrong (the
    paper scores runs with invalid labels as 0); rank mode cannot produce one. The backbone
    runs in eval mode here even when it trains with dropout kept (``--dropout keep``), so
    metrics, and the best-step choice made from them, carry no dropout noise.
    """
    with eval_mode(scorer.backbone.model):
        return _evaluate(scorer, prompt, data, mode, batch_size, progress, score)


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block, back in the mode it was in afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _evaluate(scorer: Scorer, prompt: torch.Tensor, data: TaskData, mode: Mode, batch_size: int,
              progress: Callable[[int], None] | None, score: ScoreFn | None) -> dict[str, float]:
    if not data.has_labels:
        raise TaskError(f"task {data.task.name}: split {data.split} has no labels to evaluate against")
    if len(data) == 0:
        raise TaskError(f"task {data.task.name}: split {data.split} is empty")
    labels = LabelSet.build(scorer.backbone, data.task.label_words)
    if mode == "rank":
        preds, _ = score_texts(scorer, data.texts, prompt, labels, batch_size=batch_size, progress=progress,
                               score=score)
        return compute_metrics(data.task, preds, data)
    if mode != "generate":
        raise ValueError(f"mode must be 'rank' or 'generate', got {mode!r}")
    index = {w: i for i, w in enumerate(data.task.label_words)}
    preds, invalid = [], 0
    for a, b in iter_batches(len(data), batch_size):
        for text in scorer.generate(data.texts[a:b], prompt, labels):
            pred = index.get(text, -1)
            invalid += pred < 0
            preds.append(pred)
        if progress:
            progress(b - a)
    metrics = compute_metrics(data.task, preds, data)
    metrics["invalid_rate"] = invalid / len(data)
    return metrics
