"""Resumable training: a run killed with SIGKILL and resumed ends bitwise where an
uninterrupted run ends; a checkpoint of another run is refused; trackers get the log rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spp.prompts.artifact import load_artifact
from spp.prompts.artifact.codec import safetensors_header
from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import load_splits
from spp.prompts.train.checkpoint import CheckpointConfig, CheckpointError
from spp.prompts.train.trainer import TrainConfig, build_prompt_method, train

TIMING_KEYS = {"elapsed_s", "wall_time_s"}


def _spp(*args: object) -> list[str]:
    return [sys.executable, "-m", "spp.cli.main", *map(str, args)]


def _env() -> dict[str, str]:
    # Same thread count in every process: float reductions then run in the same order.
    return os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _checkpoint_step(path: Path) -> int:
    try:
        header, _ = safetensors_header(path.read_bytes())
    except (OSError, ValueError):
        return 0
    return json.loads(header["__metadata__"]["checkpoint"])["step"]


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in path.read_text().splitlines()]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_backbone_dir, demo_data, tmp_path) -> None:
    common = ["train", demo_data["sentiment"], "--method", "superpos", "--m", 8, "--n-tokens", 3,
              "--backbone", tiny_backbone_dir, "--max-steps", 14, "--batch-size", 8, "--eval-every", 4,
              "--max-eval-samples", 16, "--device", "cpu", "--dtype", "float32", "--json"]  # auto measures per start
    straight = subprocess.run(_spp(*common, "--out", tmp_path / "a.safetensors"), env=_env(), capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    ck = tmp_path / "ck"
    resumed_out = tmp_path / "b.safetensors"
    args = [*common, "--out", resumed_out, "--checkpoint-dir", ck, "--checkpoint-every", 2]
    proc = subprocess.Popen(_spp(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _checkpoint_step(ck / "checkpoint.safetensors") < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_step(ck / "checkpoint.safetensors")
    assert 4 <= killed_at < 14, f"the run was not killed mid-way (checkpoint at step {killed_at})"
    assert not resumed_out.exists()
    log_b = tmp_path / "b.metrics.jsonl"
    assert all("final" not in row for row in _rows(log_b))

    again = subprocess.run(_spp(*args, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    a, b = load_artifact(tmp_path / "a.safetensors"), load_artifact(resumed_out)
    assert torch.equal(a.prompt, b.prompt)
    assert a.state.keys() == b.state.keys() and all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert a.meta.metrics == b.meta.metrics and a.meta.steps == b.meta.steps == 14
    assert _rows(tmp_path / "a.metrics.jsonl") == _rows(log_b)
    assert all(row["prompt_norm"] > 0 for row in _rows(log_b) if "loss" in row)


def _run(tiny_backbone, task, splits, config, ck: CheckpointConfig, **options):
    m = build_prompt_method(tiny_backbone, "ept", options, task.label_words, seed=config.seed)
    return train(tiny_backbone, m, splits, config, checkpoint=ck)


def test_resume_refuses_a_checkpoint_of_another_run(tiny_backbone, demo_data, tmp_path) -> None:
    task = get_task(demo_data["topic"])
    splits = {"train": load_splits(task, seed=0, max_train=16)["train"]}
    ck = CheckpointConfig(tmp_path / "ck", every=1)
    _run(tiny_backbone, task, splits, TrainConfig(max_steps=2, batch_size=8), ck)
    with pytest.raises(CheckpointError, match=r"different run \(train_config: .*lr"):
        _run(tiny_backbone, task, splits, TrainConfig(max_steps=2, batch_size=8, lr=0.5),
             CheckpointConfig(ck.directory, resume=True))
    with pytest.raises(CheckpointError, match="method_config"):
        _run(tiny_backbone, task, splits, TrainConfig(max_steps=2, batch_size=8),
             CheckpointConfig(ck.directory, resume=True), hidden=2)
    (ck.directory / "checkpoint.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        _run(tiny_backbone, task, splits, TrainConfig(max_steps=2, batch_size=8),
             CheckpointConfig(ck.directory, resume=True))


def test_resume_with_dtype_auto_continues_in_the_checkpointed_dtype(tmp_path) -> None:
    """`auto` measures the machine at each start; a resumed run must not switch dtype half-way."""
    import json

    import torch
    from safetensors.torch import save_file

    from spp.prompts.train.checkpoint import CheckpointConfig, resume_dtype

    cfg = CheckpointConfig(tmp_path, resume=True)
    assert resume_dtype(cfg, "auto") == "auto"  # nothing to resume yet: the hardware decides
    info = {"identity": {"dtype": "bfloat16"}}
    save_file({"x": torch.zeros(1)}, str(cfg.path), metadata={"checkpoint": json.dumps(info)})
    assert resume_dtype(cfg, "auto") == "bfloat16"
    assert resume_dtype(cfg, "float32") == "float32"  # an explicit dtype is the user's (identity check refuses a change)
    assert resume_dtype(CheckpointConfig(tmp_path, resume=False), "auto") == "auto"
    cfg.path.write_bytes(b"\xff" * 16)  # unreadable: load_checkpoint reports it once the run starts
    assert resume_dtype(cfg, "auto") == "auto"
