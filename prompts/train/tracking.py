"""Experiment tracking the way HF Trainer users expect: ``--report-to tensorboard|mlflow|wandb``.

Each tracker receives exactly the rows written to metrics.jsonl (see the trainer) and logs
their numbers flattened to ``loss``, ``prompt_norm``, ``validation/accuracy``,
``final/test/accuracy`` ... at the row's ``step``. The libraries are optional: asking for one
that is not installed is a one-line error naming the ``pip install`` to run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol, Sequence

from spp.prompts.errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb")
_PIP = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class Tracker(Protocol):
    """Anything that takes metrics.jsonl rows."""

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a row as ``a/b/c`` keys (``step`` excluded: it is the x axis)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
            out[name] = float(value)
    return out


class TensorBoardTracker:
    """Scalars into a TensorBoard event file under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, row: dict[str, Any]) -> None:
        step = int(row.get("step", 0))
        for key, value in flatten(row).items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class MlflowTracker:
    """Metrics into the active MLflow tracking URI (``MLFLOW_TRACKING_URI``), one run per training."""

    def __init__(self, run_name: str, params: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v) for k, v in flatten_params(params).items()})

    def write(self, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(flatten(row), step=int(row.get("step", 0)))

    def close(self) -> None:
        self.mlflow.end_run()


class WandbTracker:
    """Metrics into a Weights & Biases run (project ``spp`` unless ``WANDB_PROJECT`` says otherwise)."""

    def __init__(self, run_name: str, params: dict[str, Any], log_dir: Path) -> None:
        import wandb

        self.run = wandb.init(name=run_name, config=params, dir=str(log_dir), reinit=True)

    def write(self, row: dict[str, Any]) -> None:
        self.run.log(flatten(row), step=int(row.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_report_to(names: Sequence[str]) -> list[str]:
    """Validate ``--report-to`` names (``none`` = nothing) and that their libraries are installed."""
    chosen = [n for n in names if n != "none"]
    for name in chosen:
        if name not in TRACKERS:
            raise ConfigError(f"unknown --report-to {name!r} (choose from: {', '.join(TRACKERS)}, none)")
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"--report-to {name} needs the {name} package: pip install {_PIP[name]}")
    return chosen


def make_trackers(names: Sequence[str], log_dir: Path, run_name: str, params: dict[str, Any]) -> list[Tracker]:
    """One tracker per name; TensorBoard/W&B files go under ``log_dir``."""
    trackers: list[Tracker] = []
    for name in check_report_to(names):
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(log_dir / run_name))
        elif name == "mlflow":
            trackers.append(MlflowTracker(run_name, params))
        else:
            trackers.append(WandbTracker(run_name, params, log_dir))
    return trackers
