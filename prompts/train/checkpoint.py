"""Resumable training: everything a run needs to continue bitwise where it stopped.

One file, ``<dir>/checkpoint.safetensors``, replaced atomically (temp file, fsync, rename), so
a kill at any moment leaves the previous checkpoint or the new one, never a torn one. Tensors
(method state, best-so-far state, AdamW moments and step counts, torch/numpy RNG states, the
data-order generator and its current permutation) are safetensors tensors; everything else
(step, best score, history, the metrics.jsonl byte offset, Python's RNG state, the optimizer's
non-tensor state, the settings the run was made with) is JSON in the header's ``__metadata__``.
Nothing is pickled: ``torch.save`` of an optimizer state would be, so its tensors are split out.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spp.prompts.artifact.codec import safetensors_header
from spp.prompts.artifact.files import atomic_write
from spp.prompts.config import check_int
from spp.prompts.errors import ConfigError, SppError

FILE_NAME = "checkpoint.safetensors"
FORMAT = 1


class CheckpointError(SppError):
    """A checkpoint is unreadable or belongs to a different run (one-line message)."""


@dataclass
class CheckpointConfig:
    """Where and how often to checkpoint. ``every`` 0 = at every validation; always at the end."""

    directory: Path
    every: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        check_int("checkpoint_every", self.every, ConfigError, minimum=0)

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME


class BatchSampler:
    """Endless shuffled minibatches (a new seeded permutation each epoch), with savable state."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.perm is None or self.pos >= self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"sampler.gen": self.gen.get_state()}
        if self.perm is not None:
            out["sampler.perm"] = self.perm.clone()
        return out

    def restore(self, tensors: dict[str, torch.Tensor], pos: int) -> None:
        self.gen.set_state(tensors["sampler.gen"])
        self.perm, self.pos = tensors.get("sampler.perm"), pos


@dataclass
class Progress:
    """The loop's own state between steps (what is not in the method, optimizer or sampler)."""

    step: int = 0
    best_score: float = float("-inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    log_offset: int = 0


def save_checkpoint(
    cfg: CheckpointConfig,
    *,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: BatchSampler,
    progress: Progress,
    identity: dict[str, Any],
) -> Path:
    """Write the whole run state to ``cfg.path`` atomically."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"method.{k}": v for k, v in method.state_dict().items()})
    tensors.update({f"best.{k}": v for k, v in progress.best_state.items()})
    opt_scalars = _optimizer_tensors(optimizer, tensors)
    tensors.update(sampler.tensors())
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    info = {
        "format": FORMAT,
        "identity": identity,
        "step": progress.step,
        "best_score": progress.best_score if progress.best_score > float("-inf") else None,
        "best_step": progress.best_step,
        "history": progress.history,
        "elapsed_s": progress.elapsed_s,
        "log_offset": progress.log_offset,
        "sampler_pos": sampler.pos,
        "optimizer": opt_scalars,
        "rng_python": _jsonable(random.getstate()),
        "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save(tensors, metadata={"checkpoint": json.dumps(info, sort_keys=True)})
    return atomic_write(cfg.path, data)


def resume_dtype(cfg: "CheckpointConfig | None", dtype: str) -> str:
    """The dtype to load the backbone in: for ``--dtype auto`` on resume, the checkpointed run's.

    ``auto`` measures the hardware at start-up and may choose differently on a later start (a busy
    machine, another host), and a run that changes dtype half-way is no longer the same run: it
    continues in the dtype it started with. An unreadable checkpoint is reported by
    :func:`load_checkpoint`, in one line, once the run starts.
    """
    if dtype != "auto" or cfg is None or not cfg.resume or not cfg.path.is_file():
        return dtype
    try:
        return str(_info(cfg.path.read_bytes())["identity"].get("dtype") or dtype)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return dtype


def _info(data: bytes) -> dict[str, Any]:
    """The checkpoint's JSON part (step, identity, ...), from its safetensors header."""
    header, _ = safetensors_header(data)
    return json.loads(header["__metadata__"]["checkpoint"])


def load_checkpoint(
    cfg: CheckpointConfig,
    *,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: BatchSampler,
    identity: dict[str, Any],
) -> Progress | None:
    """Restore a run from ``cfg.path`` (None when there is none yet: a fresh start)."""
    from safetensors.torch import load

    if not cfg.path.is_file():
        return None
    data = cfg.path.read_bytes()
    try:
        info = _info(data)
        tensors = load(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {cfg.path} is unreadable: {exc}") from None
    if info.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {cfg.path} has format {info.get('format')}, expected {FORMAT}")
    _check_identity(cfg.path, info["identity"], identity)
    method.load_state_dict(_prefixed(tensors, "method."), strict=True)
    _load_optimizer(optimizer, tensors, info["optimizer"])
    sampler.restore(tensors, int(info["sampler_pos"]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, gauss = info["rng_numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_tupled(info["rng_python"]))
    best = info["best_score"]
    return Progress(
        step=int(info["step"]),
        best_score=float("-inf") if best is None else float(best),
        best_step=int(info["best_step"]),
        best_state=_prefixed(tensors, "best."),
        history=info["history"],
        elapsed_s=float(info["elapsed_s"]),
        log_offset=int(info["log_offset"]),
    )


def _optimizer_tensors(optimizer: torch.optim.Optimizer, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Put the optimizer's per-parameter tensors into ``out``; return its other state as JSON."""
    scalars: dict[str, Any] = {}
    for idx, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return scalars


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    # The param groups (lr, betas, weight decay) come from the freshly built optimizer: the
    # identity check has already made sure the run's settings are the same.
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in scalars.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _check_identity(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a different run: compare the settings that shape the trajectory."""
    saved_n, current_n = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    diff = sorted(k for k in set(saved_n) | set(current_n) if saved_n.get(k) != current_n.get(k))
    if diff:
        details = "; ".join(f"{k}: {saved_n.get(k)!r} then, {current_n.get(k)!r} now" for k in diff)
        raise CheckpointError(f"checkpoint {path} is from a different run ({details})")


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
