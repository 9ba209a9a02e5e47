"""Run a sweep's trials on Ray Tune: a local Ray by default, a cluster with ``address``.

The sweep's storage path holds ``sweep.json`` (the spec and its trial ids) and one folder per
trial (see :mod:`spp.sweep.trial`). A trial's own files say whether it is done, so
``resume=True`` schedules only the trials without a ``result.json``; those resume their
training from their checkpoint. Tune runs every pending trial once (no automatic retry: a
failed trial's error is kept and shown, and never stops the others). On a cluster the storage
path and the registry must be reachable from every node (shared filesystem or a PostgreSQL +
fsspec registry).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from spp.prompts.artifact.files import atomic_write
from spp.prompts.errors import SppError
from spp.sweep.spec import SweepSpec, Trial
from spp.sweep.trial import read_outcome, run_trial, trial_started

RAY_PIP = "pip install 'spp[sweep]'  (or: pip install 'ray[tune]')"


class SweepError(SppError):
    """The sweep cannot start: Ray missing or unreachable, storage of another sweep (one line)."""


@dataclass
class SweepEvent:
    kind: Literal["pending", "done", "running", "failed"]
    trial: str
    info: str = ""


@dataclass
class Resources:
    """Ray resources: the local Ray's size (None: the machine's) and each trial's share."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractional: 0.25 packs four trials on one GPU

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise SweepError("cpus per trial must be > 0 and gpus per trial >= 0")


@dataclass
class SweepSummary:
    storage: Path
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def check_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise SweepError(f"spp sweep needs Ray Tune: {RAY_PIP}")


def check_address(address: str) -> None:
    """Fail in one line, before any trial, when a Ray address cannot be reached."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise SweepError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def run_sweep(
    spec: SweepSpec,
    *,
    registry: str,
    resume: bool = False,
    address: str | None = None,
    resources: Resources | None = None,
    checkpoint_every: int = 0,
    on_event: Callable[[SweepEvent], None] | None = None,
) -> SweepSummary:
    """Run every unfinished trial of ``spec`` on Ray Tune and collect the outcomes."""
    check_ray()
    if address:
        check_address(address)
    resources = resources or Resources()
    emit = on_event or (lambda e: None)
    storage = spec.storage_path().resolve()
    trials = spec.trials()
    _claim_storage(storage, spec, trials, resume)
    todo = []
    for t in trials:
        status, outcome = read_outcome(storage, t.id)
        if status == "done":
            emit(SweepEvent("done", t.id, outcome.get("ref", "")))
        else:
            todo.append(t)
            emit(SweepEvent("pending", t.id))
    t0 = time.perf_counter()
    if todo:
        _fit(todo, spec.name, storage, registry, address, resources, checkpoint_every, emit)
    summary = SweepSummary(storage=storage, wall_s=time.perf_counter() - t0)
    for t in trials:
        status, outcome = read_outcome(storage, t.id)
        if status == "done":
            summary.done[t.id] = outcome
        elif status == "failed":
            summary.failed[t.id] = outcome
        else:
            summary.pending.append(t.id)
    return summary


def _claim_storage(storage: Path, spec: SweepSpec, trials: list[Trial], resume: bool) -> None:
    state = storage / "sweep.json"
    if state.is_file() and not resume:
        raise SweepError(f"{storage} already holds sweep {json.loads(state.read_text())['name']!r}: "
                         "pass --resume to continue it, or choose another storage path")
    record = {"name": spec.name, "spec": dataclasses.asdict(spec), "trials": [t.to_dict() for t in trials]}
    atomic_write(state, json.dumps(record, indent=1, default=str).encode())


def _fit(todo: list[Trial], sweep: str, storage: Path, registry: str, address: str | None,
         resources: Resources, checkpoint_every: int, emit: Callable[[SweepEvent], None]) -> None:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our files are the record
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, num_cpus=None if address else resources.num_cpus,
                     num_gpus=None if address else resources.num_gpus, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None
    threads = max(1, int(resources.cpus_per_trial))

    def trainable(config: dict[str, Any]) -> None:
        outcome = run_trial(Trial(**config["trial"]), sweep=sweep, storage=storage, registry=registry,
                            threads=threads, checkpoint_every=checkpoint_every)
        tune.report({"score": outcome["score"], "steps": outcome["steps"]})

    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}),
            param_space={"trial": tune.grid_search([t.to_dict() for t in todo])},
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"ray-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage / "ray"), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with _Watcher(storage, todo, emit):
            tuner.fit()
    finally:
        if started_here:
            ray.shutdown()


class _Watcher:
    """Reports trial state changes from the trials' own files, on a driver thread.

    (Tune's callbacks are pickled with its experiment state, and a live display cannot be.)
    """

    def __init__(self, storage: Path, trials: list[Trial], emit: Callable[[SweepEvent], None]) -> None:
        self.storage, self.trials, self.emit = storage, trials, emit
        self.since = time.time()
        self.seen: dict[str, str] = {t.id: "pending" for t in trials}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spp-sweep-watch", daemon=True)

    def __enter__(self) -> "_Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def poll(self) -> None:
        for t in self.trials:
            status, outcome = read_outcome(self.storage, t.id)
            if status == "pending" and trial_started(self.storage, t.id, self.since):
                status = "running"
            if status != self.seen[t.id]:
                self.seen[t.id] = status
                info = outcome.get("ref") if status == "done" else outcome.get("error", "")
                self.emit(SweepEvent(status, t.id, info or ""))  # type: ignore[arg-type]
