"""A sweep specification: the grid of tasks x methods (with options) x dropout x seeds x
backbones x learning rates, loaded from TOML and validated before any trial starts.

```toml
name = "glue-small"                 # the sweep's name: the `sweep` tag of every published version
storage = "sweeps/glue-small"       # checkpoints, results and errors [default: spp-sweeps/<name>]
registry = "registry"               # where finished trials publish [default: $SPP_HOME]
tasks = ["rte", "cb"]               # built-in names or custom task spec files
seeds = [0, 1, 2]
dropout = ["off", "keep"]
backbones = ["google/t5-small-lm-adapt"]
lrs = []                            # empty: each method's paper default
max_steps = 2000                    # or: epochs = 80
eval_every = 200

[data_dirs]                         # offline data per task
rte = "data/rte"

[[methods]]
name = "superpos"
[[methods]]
name = "ept"
label = "ept*"                      # the row label in reports [default: the method name]
options = { n_tokens = 10 }
```

Relative paths are resolved against the spec file's folder. Unknown keys, tasks, methods or
method options, bad values and an empty grid are one-line :class:`SweepSpecError`s. A missing
data dir is NOT a spec error: that trial fails alone, with its error kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spp.prompts.config import check_choice, check_int, check_number
from spp.prompts.errors import SppError

DROPOUTS = ("off", "keep")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SweepSpecError(SppError):
    """A sweep spec is malformed (one-line message naming the key)."""


@dataclass(frozen=True)
class MethodEntry:
    """One method of the grid with fixed options; ``label`` names its row in reports."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class Trial:
    """One cell of the grid: everything a worker needs to train, checkpoint and publish it."""

    id: str
    task: str  # name or absolute spec path
    task_name: str
    method: str
    label: str
    options: dict[str, Any]
    dropout: str
    seed: int
    backbone: str
    lr: float | None
    train: dict[str, Any]
    data_dir: str | None
    tokenizer: str | None
    max_train: int | None = None
    max_eval: int | None = None

    def tags(self, sweep: str) -> dict[str, str]:
        return {"sweep": sweep, "trial": self.id, "task": self.task_name, "method": self.label,
                "dropout": self.dropout, "seed": str(self.seed)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SweepSpec:
    name: str
    tasks: list[str]
    methods: list[MethodEntry]
    seeds: list[int] = field(default_factory=lambda: [42])
    dropout: list[str] = field(default_factory=lambda: ["off"])
    backbones: list[str] = field(default_factory=lambda: ["google/t5-base-lm-adapt"])
    lrs: list[float] = field(default_factory=list)
    max_steps: int | None = None
    epochs: float = 80.0
    batch_size: int = 16
    eval_every: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    tokenizer: str | None = None
    data_dirs: dict[str, str] = field(default_factory=dict)
    storage: str | None = None
    registry: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise SweepSpecError(f"sweep name {self.name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        for axis in ("tasks", "methods", "seeds", "dropout", "backbones"):
            if not getattr(self, axis):
                raise SweepSpecError(f"the grid is empty: '{axis}' has no values")
        for seed in self.seeds:
            check_int("seeds", seed, SweepSpecError, minimum=0)
        for value in self.dropout:
            check_choice("dropout", value, DROPOUTS, SweepSpecError)
        for lr in self.lrs:
            check_number("lrs", lr, SweepSpecError, above=0)
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise SweepSpecError(f"two methods share a label ({', '.join(labels)}): give each a distinct 'label'")

    def train_config(self, seed: int, lr: float | None) -> dict[str, Any]:
        from spp.prompts.train.trainer import TrainConfig

        config = TrainConfig(lr=lr, epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size,
                             eval_every=self.eval_every, seed=seed)
        return dataclasses.asdict(config)

    def trials(self) -> list[Trial]:
        """Every cell of the grid, with a stable id (same cell, same id, whatever the order)."""
        from spp.prompts.tasks import get_task

        out = []
        lrs: list[float | None] = list(self.lrs) or [None]
        for task, entry, dropout, seed, backbone, lr in itertools.product(
            self.tasks, self.methods, self.dropout, self.seeds, self.backbones, lrs
        ):
            name = get_task(task).name
            body = {"task": task, "method": entry.name, "options": entry.options, "dropout": dropout, "seed": seed,
                    "backbone": backbone, "lr": lr, "train": self.train_config(seed, lr),
                    "data_dir": self.data_dirs.get(name), "tokenizer": self.tokenizer,
                    "max_train": self.max_train_samples, "max_eval": self.max_eval_samples}
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
            out.append(Trial(id=f"{name}-{_slug(entry.label)}-{dropout}-s{seed}-{digest}", task=task, task_name=name,
                             method=entry.name, label=entry.label, options=dict(entry.options), dropout=dropout,
                             seed=seed, backbone=backbone, lr=lr,
                             train=body["train"], data_dir=body["data_dir"], tokenizer=self.tokenizer,
                             max_train=self.max_train_samples, max_eval=self.max_eval_samples))
        return out

    def storage_path(self) -> Path:
        return Path(self.storage) if self.storage else Path("spp-sweeps") / self.name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "x", text)


_KEYS = {f.name for f in dataclasses.fields(SweepSpec)}


def load_spec(path: str | Path) -> SweepSpec:
    """Read, resolve and validate a TOML spec; every problem is one SweepSpecError line."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepSpecError(f"no such sweep spec: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"{path}: not valid TOML: {exc}") from None
    return spec_from_dict(raw, base=path.resolve().parent)


def spec_from_dict(raw: dict[str, Any], base: Path) -> SweepSpec:
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise SweepSpecError(f"unknown sweep spec key(s): {', '.join(unknown)} (valid: {', '.join(sorted(_KEYS))})")
    values = dict(raw)
    values["methods"] = [_method_entry(m) for m in raw.get("methods", [])]
    values["tasks"] = [_task_ref(t, base) for t in raw.get("tasks", [])]
    values["data_dirs"] = {k: str(_resolve(v, base)) for k, v in raw.get("data_dirs", {}).items()}
    for key in ("storage", "registry"):
        if raw.get(key) and "://" not in str(raw[key]):  # a URL (shared registry) stays as written
            values[key] = str(_resolve(raw[key], base))
    if raw.get("tokenizer") and (base / raw["tokenizer"]).exists():
        values["tokenizer"] = str(base / raw["tokenizer"])
    values["backbones"] = [str(base / b) if (base / b).exists() else b for b in raw.get("backbones", ["google/t5-base-lm-adapt"])]
    try:
        spec = SweepSpec(**values)
    except TypeError as exc:
        raise SweepSpecError(f"bad sweep spec: {exc}") from None
    _check_runs(spec)
    return spec


def _method_entry(raw: Any) -> MethodEntry:
    from spp.prompts.methods import get_method

    if not isinstance(raw, dict) or "name" not in raw:
        raise SweepSpecError("each [[methods]] entry needs a name")
    stray = sorted(set(raw) - {"name", "options", "label"})
    if stray:
        raise SweepSpecError(f"[[methods]] {raw['name']}: unknown key(s) {', '.join(stray)} (valid: label, name, options)")
    cls = get_method(raw["name"])  # unknown method: its own one-line error
    options = dict(raw.get("options", {}))
    cls.config_cls.from_dict(options)  # unknown option or bad value: one-line ConfigError
    return MethodEntry(name=raw["name"], options=options, label=str(raw.get("label") or raw["name"]))


def _task_ref(task: str, base: Path) -> str:
    from spp.prompts.tasks import get_task

    candidate = base / task
    ref = str(candidate) if task.endswith((".json", ".toml")) or candidate.is_file() else task
    get_task(ref)  # unknown task or bad spec file: one-line TaskError
    return ref


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _check_runs(spec: SweepSpec) -> None:
    """The training settings must be valid too (TrainConfig's own checks), before any trial."""
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(spec, name) is not None:
            check_int(name, getattr(spec, name), SweepSpecError)
    spec.train_config(spec.seeds[0], spec.lrs[0] if spec.lrs else None)
