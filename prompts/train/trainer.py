"""Training a soft prompt on a frozen T5.

AdamW with a constant learning rate (the papers use no scheduler), gradient accumulation,
periodic validation with best-checkpoint selection, a final test evaluation, a metrics.jsonl
log, and the result packaged as an :class:`~spp.prompts.artifact.Artifact`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.backbone import Backbone, prepend_prompts
from spp.prompts.config import check_choice, check_int, check_number
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.hardware import autocast
from spp.prompts.methods.base import ConfigError, InitContext, PromptMethod
from spp.prompts.methods.registry import build_method, get_method
from spp.prompts.scoring import Scorer
from spp.prompts.tasks.data import TaskData
from spp.prompts.tasks.spec import TaskError, main_score

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyperparameters of one run. ``lr``/``weight_decay`` None = the method's paper default."""

    lr: float | None = None
    weight_decay: float | None = None
    epochs: float = 80.0  # the SuperPos-Prompt setup
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 16
    grad_accum: int = 1
    eval_every: int = 0  # optimizer steps between validations; 0 = once per epoch
    eval_batch_size: int = 32
    max_source_length: int = 512
    seed: int = 42
    mode: Literal["rank", "generate"] = "rank"

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_batch_size", "max_source_length"):
            check_int(name, getattr(self, name), ConfigError)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, ConfigError)
        check_number("epochs", self.epochs, ConfigError, above=0)
        check_int("eval_every", self.eval_every, ConfigError, minimum=0)
        check_int("seed", self.seed, ConfigError, minimum=0)
        if self.lr is not None:
            check_number("lr", self.lr, ConfigError, above=0)
        if self.weight_decay is not None:
            check_number("weight_decay", self.weight_decay, ConfigError, minimum=0)
        check_choice("mode", self.mode, ("rank", "generate"), ConfigError)


@dataclass
class TrainEvent:
    """What the trainer reports to a progress callback (the CLI draws a bar from these)."""

    kind: Literal["start", "step", "eval", "end"]
    step: int
    total_steps: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    artifact: Artifact
    method: PromptMethod
    best_step: int
    history: list[dict[str, Any]]


def set_seed(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_prompt_method(
    backbone: Backbone,
    method: str,
    options: dict[str, Any],
    label_words: tuple[str, ...],
    *,
    seed: int,
    init_prompt: torch.Tensor | None = None,
    sources: torch.Tensor | None = None,
) -> PromptMethod:
    """The method, initialised from the backbone's (float32, CPU) embedding matrix."""
    ctx = InitContext(
        embedding=backbone.embedding.detach().to("cpu", torch.float32),
        generator=set_seed(seed),
        label_token_ids=backbone.label_token_ids(label_words),
        init_prompt=init_prompt,
        sources=sources,
    )
    return build_method(method, options, ctx).to(backbone.device)


def train(
    backbone: Backbone,
    method: PromptMethod,
    splits: dict[str, TaskData],
    config: TrainConfig,
    *,
    log_path: str | Path | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    parent: str | None = None,
) -> TrainResult:
    """Train ``method`` on ``splits['train']``, select on 'validation', report 'test'."""
    train_data, task = splits["train"], splits["train"].task
    if not train_data.has_labels or len(train_data) == 0:
        raise TaskError(f"task {task.name}: the training split is empty or unlabeled")
    cls = get_method(method.name)
    lr = config.lr if config.lr is not None else cls.default_lr
    wd = config.weight_decay if config.weight_decay is not None else cls.default_weight_decay
    scorer = Scorer(backbone, max_source_length=config.max_source_length)
    opt = torch.optim.AdamW(method.param_groups(wd), lr=lr)
    micro_per_epoch = math.ceil(len(train_data) / config.batch_size)
    steps_per_epoch = max(1, micro_per_epoch // config.grad_accum)
    total = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or steps_per_epoch
    emit = on_event or (lambda e: None)
    logger = _JsonlLog(log_path)
    labels = _label_tensor(backbone, task.label_words, train_data.labels)  # (N, Lt)
    gen = torch.Generator().manual_seed(config.seed)
    best = (-math.inf, 0, copy.deepcopy(method.state_dict()))
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    emit(TrainEvent("start", 0, total))
    step, batches = 0, _batches(len(train_data), config.batch_size, gen)
    method.train()
    while step < total:
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            idx = next(batches)
            loss = _loss(scorer, method, [train_data.texts[i] for i in idx], labels[idx])
            (loss / config.grad_accum).backward()
            loss_sum += loss.item() / config.grad_accum
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        row = {"step": step, "loss": loss_sum, "lr": lr, "elapsed_s": time.perf_counter() - t0}
        emit(TrainEvent("step", step, total, loss=loss_sum))
        if "validation" in splits and (step % eval_every == 0 or step == total):
            metrics = _evaluate(scorer, method, splits["validation"], config)
            row["validation"] = metrics
            score = main_score(metrics)
            if score > best[0]:
                best = (score, step, copy.deepcopy(method.state_dict()))
            emit(TrainEvent("eval", step, total, loss=loss_sum, metrics=metrics))
        logger.write(row)
        history.append(row)
    if "validation" in splits:
        method.load_state_dict(best[2])
    final: dict[str, dict[str, float]] = {}
    for split in ("validation", "test"):
        if split in splits and splits[split].has_labels and len(splits[split]):
            final[split] = _evaluate(scorer, method, splits[split], config)
    wall = time.perf_counter() - t0
    logger.write({"final": final, "best_step": best[1], "wall_time_s": wall})
    emit(TrainEvent("end", step, total, metrics=final.get("test", final.get("validation", {}))))
    meta = _metadata(backbone, method, splits, config, lr, wd, final, step, wall, parent)
    artifact = Artifact(prompt=method.collapse(), meta=meta, state=method.state_tensors())
    return TrainResult(artifact=artifact, method=method, best_step=best[1] or step, history=history)


def _loss(scorer: Scorer, method: PromptMethod, texts: list[str], labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy of the label words, prompt prepended to the encoder input."""
    model = scorer.backbone.model
    ids, mask = scorer.tokenize(texts)
    embeds = model.get_input_embeddings()(ids)  # (B, L, e)
    inputs, full_mask = prepend_prompts(embeds, mask, method())  # (B, n+L, e)
    with autocast(ids.device, scorer.backbone.dtype):  # bf16 backbone: loss in fp32, prompt stays fp32
        out = model(inputs_embeds=inputs, attention_mask=full_mask, labels=labels.to(ids.device), use_cache=False)
    return out.loss


@torch.no_grad()
def _evaluate(scorer: Scorer, method: PromptMethod, data: TaskData, config: TrainConfig) -> dict[str, float]:
    was_training = method.training
    method.eval()
    try:
        return evaluate_prompt(scorer, method.collapse(), data, mode=config.mode, batch_size=config.eval_batch_size)
    finally:
        method.train(was_training)


def _label_tensor(backbone: Backbone, words: tuple[str, ...], labels: list[int | None]) -> torch.Tensor:
    ids = backbone.label_token_ids(words)
    width = max(len(t) for t in ids)
    table = torch.full((len(ids), width), -100, dtype=torch.long)  # -100: ignored by the loss
    for k, t in enumerate(ids):
        table[k, : len(t)] = torch.tensor(t)
    return table[torch.tensor(labels, dtype=torch.long)]  # (N, width)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless shuffled minibatches (a new permutation each epoch, seeded)."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for a in range(0, n, batch_size):
            yield perm[a : a + batch_size]


class _JsonlLog:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, row: dict[str, Any]) -> None:
        if self.path:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")


def _metadata(
    backbone: Backbone,
    method: PromptMethod,
    splits: dict[str, TaskData],
    config: TrainConfig,
    lr: float,
    wd: float,
    final: dict[str, dict[str, float]],
    steps: int,
    wall: float,
    parent: str | None,
) -> ArtifactMeta:
    task = splits["train"].task
    hparams = asdict(config) | {"lr": lr, "weight_decay": wd, "optimizer": "AdamW", "scheduler": "constant"}
    # Per split: which official split its examples came from (the papers re-split GLUE: "test" is
    # often the official validation set), so a model card can name the Hub's split for each metric.
    origins = {k: {"hub_split": v.source.get("hub_split"), "derived": v.source.get("derived")} for k, v in splits.items()}
    dataset = dict(splits["train"].source) | {"sizes": {k: len(v) for k, v in splits.items()}, "splits": origins}
    return ArtifactMeta(
        task=task.name,
        method=method.name,
        backbone=backbone.name,
        backbone_revision=backbone.revision,
        fingerprint=backbone.fingerprint,
        d_model=backbone.d_model,
        n_tokens=method.n_tokens,
        method_config=method.config.to_dict(),
        task_spec=task.to_dict(),
        metrics=final,
        trainable_params=method.num_trainable(),
        hparams=hparams,
        seed=config.seed,
        dataset=dataset,
        parent=parent,
        steps=steps,
        wall_time_s=round(wall, 3),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
