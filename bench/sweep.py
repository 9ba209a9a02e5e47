"""Sweep engine overhead: an 8-trial `spp sweep` (2 tasks x 2 methods x 2 seeds) on a local Ray
vs the same 8 `spp train` runs one after another, and the time to resume a killed sweep.

    python bench/sweep.py [--steps 20] [--num-cpus 2] [--work bench/.sweep-work] [--device cuda]
    python bench/sweep.py --backbone random:google/t5-small-lm-adapt --tokenizer DIR --steps 300

The data are the offline demo's two toy tasks (built once into --work). The default backbone is
the demo's tiny T5, so the numbers measure the engine (Ray start, worker start, per-trial
backbone load, publish) against plain runs; with a real-sized --backbone and hundreds of steps,
training dominates and the ratio shows the engine's overhead on runs like the papers'.
Writes bench/results/sweep.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import entry

from spp.prompts.hardware import cpu_model_name

TASKS = ("sentiment", "topic")
METHODS = ({"name": "superpos", "options": {"m": 16, "n_tokens": 4}}, {"name": "ept", "options": {}})
SEEDS = (0, 1)


def prepare(work: Path) -> tuple[Path, dict[str, Path]]:
    from spp.prompts.demo.toy import make_tiny_backbone_dir, write_demo_task

    model = work / "model"
    if not (model / "config.json").is_file():
        make_tiny_backbone_dir(model)
    return model, {t: write_demo_task(work / "data", t, n_train=200, n_eval=100) for t in TASKS}


def spp(*args: object) -> list[str]:
    return [sys.executable, "-m", "spp.cli.main", *map(str, args)]


def sequential(model: str, specs: dict[str, Path], steps: int, out: Path, args: argparse.Namespace) -> float:
    """The 8 runs as plain `spp train` processes, one after another (the shell-loop baseline)."""
    t0 = time.perf_counter()
    for task in TASKS:
        for m in METHODS:
            for seed in SEEDS:
                flags = [x for k, v in m["options"].items() for x in (f"--{k.replace('_', '-')}", v)]
                subprocess.run(spp("train", specs[task], "--method", m["name"], *flags, "--backbone", model,
                                   *tokenizer_flag(args), "--max-steps", steps, "--batch-size", 8, "--seed", seed,
                                   "--device", args.device,
                                   "--out", out / f"{task}-{m['name']}-{seed}.safetensors", "--publish",
                                   "--registry", out / "registry", "--json"),
                               check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - t0


def tokenizer_flag(args: argparse.Namespace) -> list[str]:
    return ["--tokenizer", args.tokenizer] if args.tokenizer else []


def write_spec(path: Path, name: str, model: str, specs: dict[str, Path], steps: int, tokenizer: str | None) -> Path:
    methods = "\n".join(f'[[methods]]\nname = "{m["name"]}"\noptions = {{ {", ".join(f"{k} = {v}" for k, v in m["options"].items())} }}\n'
                        for m in METHODS)
    path.write_text(f'name = "{name}"\nstorage = "{path.parent / name}"\nregistry = "{path.parent / "registry"}"\n'
                    f'tasks = [{", ".join(json.dumps(str(specs[t])) for t in TASKS)}]\nseeds = {list(SEEDS)}\n'
                    f'backbones = ["{model}"]\nmax_steps = {steps}\nbatch_size = 8\n'
                    + (f'tokenizer = {json.dumps(tokenizer)}\n' if tokenizer else "") + f'\n{methods}')
    return path


def sweep_args(spec: Path, args: argparse.Namespace) -> list[str]:
    gpus = ["--gpus-per-trial", "0.5"] if args.device == "cuda" else []
    return spp("sweep", spec, "--num-cpus", args.num_cpus, *gpus, "--json")


def killed_then_resumed(spec: Path, args: argparse.Namespace, kill_after: int) -> dict[str, float]:
    """Kill the driver (and its local Ray) after ``kill_after`` trials, then time the resume."""
    trials = spec.parent / spec.stem / "trials"
    t0 = time.perf_counter()
    proc = subprocess.Popen(sweep_args(spec, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while len(list(trials.glob("*/result.json"))) < kill_after and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.perf_counter() - t0
    done = len(list(trials.glob("*/result.json")))
    t1 = time.perf_counter()
    subprocess.run([*sweep_args(spec, args), "--resume"], check=True, capture_output=True, timeout=3600)
    resume = time.perf_counter() - t1
    t2 = time.perf_counter()
    subprocess.run([*sweep_args(spec, args), "--resume"], check=True, capture_output=True, timeout=3600)
    noop = time.perf_counter() - t2
    return {"killed_after_s": killed_at, "trials_done_at_kill": done, "resume_to_end_s": resume,
            "resume_when_all_done_s": noop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per trial")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    parser.add_argument("--work", type=Path, default=Path("bench/.sweep-work"))
    parser.add_argument("--backbone", default=None, help="default: the demo's tiny T5 (built into --work)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer id/dir (a random:<name> backbone needs one offline)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/sweep.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work = args.work.resolve()  # the spec names files by absolute path (relative ones are the spec's)
    tiny, specs = prepare(args.work)
    model = args.backbone or str(tiny)
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    (runs / "seq").mkdir(parents=True)
    seq = sequential(model, specs, args.steps, runs / "seq", args)
    spec = write_spec(runs / "full.toml", "full", model, specs, args.steps, args.tokenizer)
    t0 = time.perf_counter()
    subprocess.run(sweep_args(spec, args), check=True, capture_output=True, timeout=3600)
    swept = time.perf_counter() - t0
    resume = killed_then_resumed(write_spec(runs / "killed.toml", "killed", model, specs, args.steps, args.tokenizer), args, 4)
    result = {
        "benchmark": "sweep", "trials": 8, "steps_per_trial": args.steps, "device": args.device,
        "backbone": args.backbone or "the demo's tiny T5",
        "cpu": cpu_model_name(), "cpus": os.cpu_count(), "ray_num_cpus": args.num_cpus, "loadavg_1m": os.getloadavg()[0],
        "sequential_spp_train_s": round(seq, 2), "sweep_s": round(swept, 2), "sweep_over_sequential": round(swept / seq, 3),
        "resume": {k: round(v, 2) if isinstance(v, float) else v for k, v in resume.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    entry(main)
