"""`spp sweep` on a real local Ray (2 CPUs): 2 tasks x 2 methods x 2 seeds publish 8 versions;
the driver killed mid-sweep and resumed still leaves exactly 8; a trial whose data dir is
missing fails alone with its error shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spp.registry import Registry

pytest.importorskip("ray")

SPEC = """
name = "{name}"
storage = "{storage}"
registry = "{registry}"
tasks = [{tasks}]
seeds = {seeds}
backbones = ["{backbone}"]
max_steps = 2
batch_size = 8
max_train_samples = 16
max_eval_samples = 8
{extra}

[[methods]]
name = "simple"
options = {{ n_tokens = 2 }}
{more_methods}
"""


def _spec(tmp_path: Path, name: str, tasks: list[Path], seeds: list[int], backbone: Path, extra: str = "",
          more_methods: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, storage=tmp_path / name, registry=tmp_path / "registry",
                                tasks=", ".join(f'"{t}"' for t in tasks), seeds=seeds, backbone=backbone,
                                extra=extra, more_methods=more_methods))
    return path


def _sweep(*args: object, **kwargs) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "spp.cli.main", "sweep", *map(str, args), "--num-cpus", "2"],
                          env=env, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.mark.timeout(1200)  # two Ray starts and 8 trial workers; minutes on a loaded 2-core machine
def test_sweep_killed_and_resumed_publishes_each_trial_once(tiny_backbone_dir, demo_data, tmp_path) -> None:
    spec = _spec(tmp_path, "grid", [demo_data["sentiment"], demo_data["topic"]], [0, 1], tiny_backbone_dir,
                 more_methods='[[methods]]\nname = "ept"')
    results = tmp_path / "grid" / "trials"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    # Its own session: killing the group takes the driver and the local Ray it started, as a crash would.
    driver = subprocess.Popen([sys.executable, "-m", "spp.cli.main", "sweep", str(spec), "--num-cpus", "2", "--json"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while len(list(results.glob("*/result.json"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_before = len(list(results.glob("*/result.json")))
    assert 2 <= finished_before < 8, f"the driver was not killed mid-sweep ({finished_before} trials done)"

    resumed = _sweep(spec, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    assert len(report["done"]) == 8 and not report["failed"] and not report["pending"]
    versions = Registry(tmp_path / "registry").list(tags={"sweep": "grid"})
    assert len(versions) == 8
    cells = {(v.tags["task"], v.tags["method"], v.tags["dropout"], v.tags["seed"]) for v in versions}
    assert cells == {(t, m, "off", s) for t in ("sentiment", "topic") for m in ("simple", "ept") for s in ("0", "1")}
    assert sorted(v.ref for v in versions) == sorted(report["done"].values())

    again = _sweep(spec, "--resume", "--json")  # everything done: nothing reruns, nothing republished
    assert again.returncode == 0 and json.loads(again.stdout)["done"] == report["done"]
    assert len(Registry(tmp_path / "registry").list(tags={"sweep": "grid"})) == 8


@pytest.mark.timeout(900)
def test_a_trial_with_a_missing_data_dir_fails_alone(tiny_backbone_dir, demo_data, tmp_path) -> None:
    spec = _spec(tmp_path, "broken", [demo_data["sentiment"], demo_data["topic"]], [0], tiny_backbone_dir,
                 extra=f'[data_dirs]\ntopic = "{tmp_path / "no-such-dir"}"')
    result = _sweep(spec)
    assert result.returncode == 1, result.stderr[-3000:]
    out = " ".join(result.stdout.split())
    assert "1 done, 1 failed" in out
    assert "failed topic-simple-off-s0-" in out and "no-such-dir does not exist" in out
    error = json.loads(next((tmp_path / "broken" / "trials").glob("topic-*/error.json")).read_text())
    assert error["error"].startswith("TaskError: data dir") and "Traceback" in error["traceback"]
    versions = Registry(tmp_path / "registry").list(tags={"sweep": "broken"})
    assert [v.tags["task"] for v in versions] == ["sentiment"]
