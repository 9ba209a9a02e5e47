"""`spp demo`: the whole loop offline on a CPU in about a minute.

Builds the tiny backbone of :mod:`spp.prompts.demo` as a local model directory, writes two
synthetic tasks as custom task specs with csv data, trains and evaluates one prompt per task,
writes the artifacts and returns the commands to continue (publish, serve, transfer).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Callable

from spp.prompts.backbone import load_backbone
from spp.prompts.tasks.catalog import get_task
from spp.prompts.tasks.data import load_split
from spp.prompts.demo.toy import TASKS, make_tiny_backbone_dir, write_demo_task
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.train.pipeline import train_to_artifact
from spp.prompts.scoring import Scorer
from spp.prompts.train.trainer import TrainConfig, TrainEvent, build_prompt_method


def run_demo(
    out: str | Path,
    *,
    steps: int = 150,
    method: str = "superpos",
    on_event: Callable[[TrainEvent], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    out = Path(out)
    stage = on_stage or (lambda s: None)
    t0 = time.perf_counter()
    model_dir = out / "backbone"
    if (model_dir / "config.json").is_file():
        stage(f"reusing the tiny backbone in {model_dir}")
    else:
        stage(f"building a tiny T5 (pretrained for a few seconds on instruction-prefixed tasks) in {model_dir}")
        make_tiny_backbone_dir(model_dir)
    backbone = load_backbone(str(model_dir), device="cpu")
    config = TrainConfig(max_steps=steps, batch_size=16, eval_every=max(1, steps // 3), seed=0)
    tasks = []
    for name in TASKS:
        spec_path = write_demo_task(out / "data", name)
        spec = get_task(spec_path)
        before = _untrained_accuracy(backbone, spec, method, config.seed)
        stage(f"training a {method} prompt for task {name!r} ({steps} steps)")
        result, path = train_to_artifact(
            backbone, spec, method, {}, config, out=out / f"{name}.safetensors",
            log_path=out / f"{name}.metrics.jsonl", on_event=on_event,
        )
        tasks.append(
            {"task": name, "spec": str(spec_path), "artifact": str(path), "accuracy_before": before,
             "test": result.artifact.meta.metrics.get("test", {}), "trainable_params": result.method.num_trainable()}
        )
    return {"out": str(out), "backbone": str(model_dir), "tasks": tasks, "wall_time_s": time.perf_counter() - t0,
            "next": _next_commands(out, model_dir, tasks)}


def _untrained_accuracy(backbone, spec, method: str, seed: int) -> float:
    """Test accuracy of the method's initial prompt: the chance level training starts from."""
    data = load_split(spec, "test")
    prompt = build_prompt_method(backbone, method, {}, spec.label_words, seed=seed).collapse()
    return evaluate_prompt(Scorer(backbone), prompt, data)["accuracy"]


def _next_commands(out: Path, model_dir: Path, tasks: list[dict[str, Any]]) -> list[str]:
    q = shlex.quote
    reg = q(str(out / "registry"))
    lines = [f"spp eval {q(tasks[0]['artifact'])} --split test"]
    lines += [f"spp publish {q(t['artifact'])} --alias prod --registry {reg}" for t in tasks]
    lines.append(f"spp list --registry {reg}")
    names = ",".join(t["task"] for t in tasks)
    lines.append(f"spp serve --backbone {q(str(model_dir))} --registry {reg} --preload {names}")
    field = TASKS[tasks[0]["task"]]["field"]
    lines.append(
        "curl -s -X POST 'http://127.0.0.1:8000/predict?task=" + tasks[0]["task"] + "@prod' "
        "-H 'content-type: application/json' -d '{\"inputs\": [{\"" + field + "\": \"great movie\"}]}'"
    )
    specs = ",".join(t["spec"] for t in tasks)
    lines.append(f"spp transfer --prompts {names} --tasks {q(specs)} --registry {reg} --out {q(str(out / 'transfer'))}")
    return lines
