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
from typing import Any, Callable, Literal, Sequence

import torch

from spp.prompts import packed as packed_t5
from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.backbone import Backbone, prepend_prompts
from spp.prompts.config import check_choice, check_int, check_number
from spp.prompts.evaluate import eval_mode, evaluate_prompt
from spp.prompts.hardware import autocast
from spp.prompts.methods.base import ConfigError, InitContext, PromptMethod
from spp.prompts.methods.registry import build_method, get_method
from spp.prompts.scoring import Scorer
from spp.prompts.tasks.data import TaskData
from spp.prompts.tasks.spec import TaskError, main_score
from spp.prompts.train.checkpoint import BatchSampler, CheckpointConfig, Progress, load_checkpoint, save_checkpoint
from spp.prompts.train.tracking import Tracker

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
    checkpoint: CheckpointConfig | None = None,
    trackers: Sequence[Tracker] = (),
) -> TrainResult:
    """Train ``method`` on ``splits['train']``, select on 'validation', report 'test'.

    With ``checkpoint`` the run state is saved every ``checkpoint.every`` steps (and at the
    end); with ``checkpoint.resume`` a run continues from its checkpoint and ends bitwise where
    an uninterrupted run with the same settings ends.
    """
    train_data, task = splits["train"], splits["train"].task
    if not train_data.has_labels or len(train_data) == 0:
        raise TaskError(f"task {task.name}: the training split is empty or unlabeled")
    loop = _Loop(backbone, method, splits, config, checkpoint)
    progress = loop.start()
    emit = on_event or (lambda e: None)
    log_file = _JsonlLog(log_path, offset=progress.log_offset if progress.step else None)
    emit(TrainEvent("start", progress.step, loop.total))
    method.train()
    while progress.step < loop.total:
        row, metrics = loop.step(progress)
        emit(TrainEvent("step", progress.step, loop.total, loss=row["loss"]))
        if metrics is not None:
            emit(TrainEvent("eval", progress.step, loop.total, loss=row["loss"], metrics=metrics))
        for sink in (log_file, *trackers):
            sink.write(row)
        progress.history.append(row)
        progress.log_offset = log_file.offset
        loop.maybe_checkpoint(progress)
    if "validation" in splits:
        method.load_state_dict(progress.best_state)
    final: dict[str, dict[str, float]] = {}
    for split in ("validation", "test"):
        if split in splits and splits[split].has_labels and len(splits[split]):
            final[split] = _evaluate(loop.scorer, method, splits[split], config)
    wall = loop.elapsed()
    last = {"final": final, "best_step": progress.best_step, "wall_time_s": wall}
    log_file.write(last)
    for tracker in trackers:  # trackers need an x value: the final metrics sit at the last step
        tracker.write(last | {"step": progress.step})
        tracker.close()
    emit(TrainEvent("end", progress.step, loop.total, metrics=final.get("test", final.get("validation", {}))))
    meta = _metadata(backbone, method, splits, config, loop.lr, loop.wd, final, progress.step, wall, parent)
    artifact = Artifact(prompt=method.collapse(), meta=meta, state=method.state_tensors())
    return TrainResult(artifact=artifact, method=method, best_step=progress.best_step or progress.step,
                       history=progress.history)


class _Loop:
    """One run's optimizer, data order and step function, with checkpoint save/restore."""

    def __init__(self, backbone: Backbone, method: PromptMethod, splits: dict[str, TaskData], config: TrainConfig,
                 checkpoint: CheckpointConfig | None) -> None:
        cls = get_method(method.name)
        self.method, self.splits, self.config, self.checkpoint = method, splits, config, checkpoint
        self.lr = config.lr if config.lr is not None else cls.default_lr
        self.wd = config.weight_decay if config.weight_decay is not None else cls.default_weight_decay
        self.scorer = Scorer(backbone, max_source_length=config.max_source_length)
        self.opt = torch.optim.AdamW(method.param_groups(self.wd), lr=self.lr)
        data = splits["train"]
        steps_per_epoch = max(1, math.ceil(len(data) / config.batch_size) // config.grad_accum)
        self.total = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
        self.eval_every = config.eval_every or steps_per_epoch
        self.labels = _label_tensor(backbone, data.task.label_words, data.labels)  # (N, Lt)
        self.sampler = BatchSampler(len(data), config.batch_size, config.seed)
        self.identity = {"task": data.task.name, "method": method.name, "method_config": method.config.to_dict(),
                         "train_config": asdict(config), "train_size": len(data), "backbone": backbone.fingerprint,
                         "dtype": str(backbone.dtype).removeprefix("torch.")}  # a resumed run keeps its dtype
        self.t0 = time.perf_counter()

    def start(self) -> Progress:
        """A fresh run's progress, or the checkpoint's when resuming (method, optimizer, RNGs restored)."""
        progress = None
        if self.checkpoint and self.checkpoint.resume:
            progress = load_checkpoint(self.checkpoint, method=self.method, optimizer=self.opt,
                                       sampler=self.sampler, identity=self.identity)
            if progress:
                log.info("resuming at step %d of %d from %s", progress.step, self.total, self.checkpoint.path)
        progress = progress or Progress(best_state=copy.deepcopy(self.method.state_dict()))
        self.t0 = time.perf_counter() - progress.elapsed_s
        return progress

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def step(self, progress: Progress) -> tuple[dict[str, Any], dict[str, float] | None]:
        """One optimizer step (and a validation when due): the log row and the metrics if any."""
        data, config = self.splits["train"], self.config
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            idx = self.sampler.next()
            loss = prompt_loss(self.scorer, self.method, [data.texts[i] for i in idx], self.labels[idx])
            (loss / config.grad_accum).backward()
            loss_sum += loss.item() / config.grad_accum
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        progress.step += 1
        row: dict[str, Any] = {"step": progress.step, "loss": loss_sum, "lr": self.lr,
                               "prompt_norm": _prompt_norm(self.method), "elapsed_s": self.elapsed()}
        metrics = None
        if "validation" in self.splits and (progress.step % self.eval_every == 0 or progress.step == self.total):
            metrics = _evaluate(self.scorer, self.method, self.splits["validation"], config)
            row["validation"] = metrics
            score = main_score(metrics)
            if score > progress.best_score:
                progress.best_score, progress.best_step = score, progress.step
                progress.best_state = copy.deepcopy(self.method.state_dict())
        return row, metrics

    def maybe_checkpoint(self, progress: Progress) -> None:
        if self.checkpoint is None:
            return
        every = self.checkpoint.every or self.eval_every
        if progress.step % every == 0 or progress.step == self.total:
            progress.elapsed_s = self.elapsed()
            save_checkpoint(self.checkpoint, method=self.method, optimizer=self.opt, sampler=self.sampler,
                            progress=progress, identity=self.identity)


@torch.no_grad()
def _prompt_norm(method: PromptMethod) -> float:
    """mu_t: the mean L2 norm of the prompt tokens (EPT's prompt-norm curves)."""
    return float(method().detach().float().norm(dim=-1).mean())


def prompt_loss(scorer: Scorer, method: Callable[[], torch.Tensor], texts: list[str], labels: torch.Tensor
                ) -> torch.Tensor:
    """Teacher-forced cross-entropy of the label words (``labels`` (B, D), -100 = ignored) for
    ``texts`` with ``method()``'s (n, e) prompt prepended to the encoder input: the training loss,
    on the scorer's forwards (unpadded where it packs)."""
    model = scorer.backbone.model
    ids, mask = scorer.tokenize(texts)
    embeds = model.get_input_embeddings()(ids)  # (B, L, e)
    inputs, full_mask = prepend_prompts(embeds, mask, method())  # (B, n+L, e)
    labels = labels.to(ids.device)
    with autocast(ids.device, scorer.backbone.dtype):  # bf16 backbone: loss in fp32, prompt stays fp32
        if scorer.packed and not model.training:  # unpadded forwards (spp.prompts.packed), same loss
            return packed_t5.label_loss(model, inputs, full_mask, labels)
        return model(inputs_embeds=inputs, attention_mask=full_mask, labels=labels, use_cache=False).loss


@torch.no_grad()
def _evaluate(scorer: Scorer, method: PromptMethod, data: TaskData, config: TrainConfig) -> dict[str, float]:
    with eval_mode(method):
        return evaluate_prompt(scorer, method.collapse(), data, mode=config.mode, batch_size=config.eval_batch_size)


def _label_tensor(backbone: Backbone, words: tuple[str, ...], labels: list[int | None]) -> torch.Tensor:
    ids = backbone.label_token_ids(words)
    width = max(len(t) for t in ids)
    table = torch.full((len(ids), width), -100, dtype=torch.long)  # -100: ignored by the loss
    for k, t in enumerate(ids):
        table[k, : len(t)] = torch.tensor(t)
    return table[torch.tensor(labels, dtype=torch.long)]  # (N, width)


class _JsonlLog:
    """metrics.jsonl: one JSON row per line. A resumed run cuts the file back to the checkpoint's
    byte offset, dropping rows logged after the checkpoint (they are logged again)."""

    def __init__(self, path: str | Path | None, offset: int | None = None) -> None:
        self.path = Path(path) if path else None
        self.offset = 0
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if offset is None or not self.path.is_file():
                self.path.write_text("")
            else:
                with self.path.open("r+b") as fh:
                    fh.truncate(offset)
                self.offset = offset

    def write(self, row: dict[str, Any]) -> None:
        if self.path:
            with self.path.open("ab") as fh:
                fh.write((json.dumps(row, sort_keys=True) + "\n").encode())
                self.offset = fh.tell()


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
