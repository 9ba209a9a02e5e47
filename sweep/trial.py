"""One sweep trial, as a Ray worker runs it: train (resumable), publish once, record the outcome.

Everything a trial leaves is under ``<storage>/trials/<id>/``: ``checkpoint/`` (resumable run
state, see :mod:`spp.prompts.train.checkpoint`), ``prompt.safetensors``, ``metrics.jsonl``,
and exactly one of ``result.json`` (finished and published) or ``error.json`` (its error kept:
one line plus the traceback). A trial with a ``result.json`` is never run again.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

from spp.prompts.artifact.files import atomic_write
from spp.sweep.spec import Trial

RESULT = "result.json"
ERROR = "error.json"
STARTED = "started"


def trial_dir(storage: Path, trial_id: str) -> Path:
    return Path(storage) / "trials" / trial_id


def read_outcome(storage: Path, trial_id: str) -> tuple[str, dict[str, Any]]:
    """("done", result) | ("failed", error) | ("pending", {}) from the trial's files."""
    folder = trial_dir(storage, trial_id)
    for status, name in (("done", RESULT), ("failed", ERROR)):
        path = folder / name
        if path.is_file():
            return status, json.loads(path.read_text())
    return "pending", {}


def trial_started(storage: Path, trial_id: str, since: float) -> bool:
    """Whether the trial's worker started it at or after ``since`` (a Unix time)."""
    try:
        return float((trial_dir(storage, trial_id) / STARTED).read_text()) >= since
    except (OSError, ValueError):
        return False


def run_trial(trial: Trial, *, sweep: str, storage: Path, registry: str, threads: int,
              checkpoint_every: int = 0) -> dict[str, Any]:
    """Train ``trial`` (resuming its checkpoint if any), publish it once, write result.json.

    Any exception is written to error.json and re-raised, so Ray records the trial as failed
    while the other trials go on.
    """
    folder = trial_dir(storage, trial.id)
    status, outcome = read_outcome(storage, trial.id)
    if status == "done":
        return outcome
    (folder / ERROR).unlink(missing_ok=True)
    atomic_write(folder / STARTED, repr(time.time()).encode())
    try:
        outcome = _train_and_publish(trial, sweep, folder, registry, threads, checkpoint_every)
    except BaseException as exc:
        error = {"trial": trial.id, "error": _one_line(exc), "traceback": traceback.format_exc()}
        atomic_write(folder / ERROR, json.dumps(error, indent=1).encode())
        raise
    atomic_write(folder / RESULT, json.dumps(outcome, indent=1, sort_keys=True).encode())
    return outcome


def _train_and_publish(trial: Trial, sweep: str, folder: Path, registry: str, threads: int,
                       checkpoint_every: int) -> dict[str, Any]:
    import torch

    from spp.prompts.backbone import load_backbone
    from spp.prompts.tasks import get_task, main_score
    from spp.prompts.train.checkpoint import CheckpointConfig, resume_dtype
    from spp.prompts.train.pipeline import method_options, train_to_artifact
    from spp.prompts.train.trainer import TrainConfig

    torch.set_num_threads(max(1, threads))
    spec = get_task(trial.task)
    checkpoint = CheckpointConfig(folder / "checkpoint", every=checkpoint_every, resume=True)
    backbone = load_backbone(trial.backbone, tokenizer=trial.tokenizer, dropout=trial.dropout,  # type: ignore[arg-type]
                             dtype=resume_dtype(checkpoint, "auto"))
    result, path = train_to_artifact(
        backbone, spec, trial.method, method_options(trial.method, dict(trial.options)), TrainConfig(**trial.train),
        out=folder / "prompt.safetensors", data_dir=trial.data_dir, max_train=trial.max_train,
        max_eval=trial.max_eval, log_path=folder / "metrics.jsonl", checkpoint=checkpoint,
    )
    ref = publish_once(path, registry, trial.tags(sweep))
    metrics = result.artifact.meta.metrics
    split = "test" if "test" in metrics else "validation"
    return {"trial": trial.id, "ref": ref, "metrics": metrics, "score": main_score(metrics.get(split, {}), spec.metrics),
            "steps": result.artifact.meta.steps, "wall_time_s": result.artifact.meta.wall_time_s}


def publish_once(path: Path, registry: str, tags: dict[str, str]) -> str:
    """Publish unless a version with this sweep+trial tag exists: a retried trial (whose
    artifact differs in created_at and wall time) never adds a second version."""
    from spp.registry import Registry

    with Registry(registry) as reg:
        existing = reg.list(tags={"sweep": tags["sweep"], "trial": tags["trial"]})
        if existing:
            return existing[0].ref
        version, _ = reg.publish(path, tags=tags)
        return version.ref


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
