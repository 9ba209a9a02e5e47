"""End-to-end jobs the CLI runs: train-to-artifact, evaluate an artifact, count parameters, demo.

The CLI stays thin: it parses flags into these calls and renders what they return.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from spp.prompts.artifact import Artifact, ArtifactMeta, save_artifact
from spp.prompts.backbone import Backbone, BackboneError, RANDOM_PREFIX, random_config, untie_lm_head
from spp.prompts.methods.base import ConfigError, InitContext
from spp.prompts.methods.registry import build_method, get_method, method_names
from spp.prompts.tasks.data import load_split, load_splits
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.config import check_shards
from spp.prompts.parallel import ShardedScore
from spp.prompts.scoring import Scorer
from spp.prompts.tasks.spec import TaskSpec
from spp.prompts.train.checkpoint import CheckpointConfig
from spp.prompts.train.tracking import make_trackers
from spp.prompts.train.trainer import TrainConfig, TrainEvent, TrainResult, build_prompt_method, train

log = logging.getLogger(__name__)


def method_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keep the options the user set; refuse ones that the method does not have.

    ``options`` holds every method flag of the CLI with None for "not given".
    """
    cls = get_method(method)
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    given = {k: v for k, v in options.items() if v is not None}
    stray = sorted(set(given) - fields)
    if stray:
        flags = ", ".join("--" + s.replace("_", "-") for s in stray)
        raise ConfigError(f"{flags} does not apply to method {method} (its options: {', '.join(sorted(fields))})")
    return given


def train_to_artifact(
    backbone: Backbone,
    task: TaskSpec,
    method: str,
    options: dict[str, Any],
    config: TrainConfig,
    *,
    out: str | Path,
    data_dir: str | Path | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    log_path: str | Path | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    init_prompt: torch.Tensor | None = None,
    sources: torch.Tensor | None = None,
    parent: str | None = None,
    checkpoint: CheckpointConfig | None = None,
    report_to: Sequence[str] = (),
) -> tuple[TrainResult, Path]:
    """Load the splits, train, and write the artifact to ``out`` (atomically)."""
    if init_prompt is not None:
        backbone.check_prompt(backbone.fingerprint, int(init_prompt.shape[-1]), what="init prompt")
    splits = load_splits(task, data_dir=data_dir, max_train=max_train, max_eval=max_eval, seed=config.seed)
    method_obj = build_prompt_method(
        backbone, method, options, task.label_words, seed=config.seed, init_prompt=init_prompt, sources=sources
    )
    run_name = Path(out).stem
    params = {"task": task.name, "method": method, "options": options, "backbone": backbone.name,
              "train": dataclasses.asdict(config)}
    trackers = make_trackers(report_to, Path(out).parent / "runs", run_name, params)
    result = train(backbone, method_obj, splits, config, log_path=log_path, on_event=on_event, parent=parent,
                   checkpoint=checkpoint, trackers=trackers)
    return result, save_artifact(result.artifact, out)


def evaluate_artifact(
    backbone: Backbone,
    artifact: Artifact,
    task: TaskSpec,
    *,
    split: str = "validation",
    data_dir: str | Path | None = None,
    max_samples: int | None = None,
    mode: str = "rank",
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    shards: int | None = None,
    on_examples: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], int]:
    """Metrics of an artifact's prompt on a split of ``task``; also returns the example count.
    Rank mode scores each batch as ``shards`` shards at once (spp.prompts.parallel; None: 2 on a
    CPU, 1 on a GPU). ``progress`` gets the count of each batch scored, ``on_examples`` the
    number of examples once the split is loaded (a progress bar's total)."""
    check_shards(shards, ConfigError)
    backbone.check_prompt(artifact.meta.fingerprint, artifact.meta.d_model, what=f"prompt ({artifact.meta.task})")
    data = load_split(task, split, data_dir=data_dir, max_samples=max_samples)
    if on_examples:
        on_examples(len(data))
    scorer = Scorer(backbone)
    with ShardedScore.planned(scorer, shards) as sharded:
        metrics = evaluate_prompt(scorer, artifact.prompt, data, mode=mode, batch_size=batch_size,
                                  progress=progress, score=sharded)
    return metrics, len(data)


def task_of(meta: ArtifactMeta) -> TaskSpec:
    """The task an artifact was trained on, rebuilt from its metadata (no code needed)."""
    return TaskSpec.from_dict(meta.task_spec)


def backbone_shape(name: str) -> tuple[Any, int]:
    """(config, total parameter count) of a backbone without loading its weights."""
    from transformers import AutoConfig, T5ForConditionalGeneration

    if name.startswith(RANDOM_PREFIX):
        config = random_config(name[len(RANDOM_PREFIX):])
    else:
        try:
            config = AutoConfig.from_pretrained(name)
        except OSError as exc:
            raise BackboneError(f"cannot read the config of backbone {name!r}: {str(exc).splitlines()[0]}") from None
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = T5ForConditionalGeneration(config)
        if not getattr(config, "scale_decoder_outputs", True):
            untie_lm_head(model)
    return config, sum(p.numel() for p in model.parameters())


def method_param_counts(backbone: str, options: dict[str, Any]) -> dict[str, Any]:
    """Trainable parameters of every method for ``backbone`` (options a method lacks are ignored)."""
    config, total = backbone_shape(backbone)
    e, vocab = int(config.d_model), int(config.vocab_size)
    rows = []
    for name in method_names():
        cls = get_method(name)
        fields = {f.name for f in dataclasses.fields(cls.config_cls)}
        opts = {k: v for k, v in options.items() if v is not None and k in fields}
        n = opts.get("n_tokens", cls.config_cls().n_tokens) if "n_tokens" in fields else None
        ctx = InitContext(
            embedding=torch.zeros(vocab, e),
            label_token_ids=[[3], [4]],
            sources=torch.zeros(2, n or 1, e),
            init_prompt=torch.zeros(n or 1, e),
        )
        if str(opts.get("init", "")).startswith("artifact:"):
            opts["init"] = "sample-vocab"  # counting only: the file is not needed
        method = build_method(name, opts, ctx)
        count = method.num_trainable()
        rows.append(
            {
                "method": name,
                "n_tokens": method.n_tokens,
                "trainable_params": count,
                "share_of_backbone": count / total,
                "config": method.config.to_dict(),
                "default_lr": cls.default_lr,
                "default_weight_decay": cls.default_weight_decay,
                "summary": cls.summary,
            }
        )
    return {"backbone": backbone, "d_model": e, "vocab_size": vocab, "backbone_params": total, "methods": rows}
