"""`spp train`, `spp eval`, `spp methods` and `spp demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from spp.cli import common

DEFAULT_BACKBONE = "google/t5-base-lm-adapt"

Backbone = Annotated[
    str,
    typer.Option(
        "--backbone", "-b",
        help="T5 checkpoint: Hub id, local directory, or random:<name> (random:t5-small, "
        "random:google/t5-base-lm-adapt, ...: real architecture, random weights, no download).",
    ),
]
Tokenizer = Annotated[Optional[str], typer.Option(help="Tokenizer Hub id or directory (default: the backbone's).")]
DataDir = Annotated[
    Optional[Path],
    typer.Option(help="Local data: GLUE TSV (train/dev/test.tsv) or SuperGLUE JSONL (train/val.jsonl). Default: the Hub."),
]
Device = Annotated[str, typer.Option(help="auto (CUDA if present, bf16 there), cpu, cuda, cuda:1 ...")]
Dtype = Annotated[str, typer.Option(help="auto, float32 or bfloat16.")]


def train_cmd(
    task: Annotated[str, typer.Argument(help="Task name (rte, sst2, ...; see `spp tasks`) or a custom task spec .json/.toml.")],
    method: Annotated[str, typer.Option("--method", "-m", help="Prompt method (see `spp methods`).")] = "superpos",
    backbone: Backbone = DEFAULT_BACKBONE,
    tokenizer: Tokenizer = None,
    data_dir: DataDir = None,
    out: Annotated[Optional[Path], typer.Option(help="Artifact path \\[default: <task>-<method>.safetensors].")] = None,
    n_tokens: Annotated[Optional[int], typer.Option(help="Prompt length n \\[method default: 10; ept: 1].")] = None,
    init: Annotated[Optional[str], typer.Option(help="simple: sample-vocab, uniform, labels or artifact:PATH.")] = None,
    m: Annotated[Optional[int], typer.Option("--m", help="superpos: sampled embeddings m \\[128].")] = None,
    softmax: Annotated[Optional[bool], typer.Option("--softmax/--no-softmax", help="superpos: softmax ablation.")] = None,
    bottleneck: Annotated[Optional[int], typer.Option(help="residual: bottleneck size \\[128].")] = None,
    shared: Annotated[Optional[bool], typer.Option("--shared/--per-token", help="residual: one MLP for all tokens.")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="ept: hidden size \\[1]; ptuning: MLP width \\[d_model].")] = None,
    option: Annotated[list[str], typer.Option("--option", "-o", help="Any other method option KEY=VALUE.")] = [],
    init_from: Annotated[Optional[str], typer.Option(help="SPoT: start from a published prompt (REF) or .safetensors file.")] = None,
    sources: Annotated[Optional[str], typer.Option(help="attempt: source prompts REF,REF,... (registry refs or files).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate \\[method's paper default].")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay \\[method's paper default].")] = None,
    epochs: Annotated[float, typer.Option(help="Training epochs (the paper: 80).")] = 80.0,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 16,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps (0: once per epoch).")] = 0,
    eval_batch_size: Annotated[int, typer.Option(help="Batch size of evaluation.")] = 32,
    max_train_samples: Annotated[Optional[int], typer.Option(help="Use at most N training examples.")] = None,
    max_eval_samples: Annotated[Optional[int], typer.Option(help="Use at most N validation/test examples.")] = None,
    max_source_length: Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")] = 512,
    mode: Annotated[str, typer.Option(help="Evaluation: rank (rank classification) or generate (paper parity).")] = "rank",
    dropout: Annotated[str, typer.Option(help="Backbone dropout: off (SuperPos-Prompt) or keep.")] = "off",
    seed: Annotated[int, typer.Option(help="Random seed (init, shuffling, splits).")] = 42,
    device: Device = "auto",
    dtype: Dtype = "auto",
    log: Annotated[Optional[Path], typer.Option(help="metrics.jsonl path \\[default: beside the artifact].")] = None,
    publish: Annotated[bool, typer.Option(help="Publish the artifact to the registry on success.")] = False,
    alias: Annotated[Optional[str], typer.Option(help="With --publish: point this alias at the new version.")] = None,
    registry: common.RegistryOpt = None,
    json_out: common.JsonFlag = False,
) -> None:
    """Train a soft prompt on a frozen T5 and write it as one .safetensors artifact.

    Paper defaults: `spp train rte` trains SuperPos-Prompt (n=10, m=128, lr 0.01, wd 1e-5) on
    google/t5-base-lm-adapt for 80 epochs with dropout removed from the backbone.
    """
    from spp.cli.progress import TrainProgress
    from spp.cli.sources import resolve_init, resolve_sources
    from spp.prompts.backbone import load_backbone
    from spp.prompts.tasks import get_task
    from spp.prompts.train.pipeline import method_options, train_to_artifact
    from spp.prompts.train.trainer import TrainConfig

    common.quiet_libraries()
    spec = get_task(task)
    raw = {"n_tokens": n_tokens, "init": init, "m": m, "softmax": softmax, "bottleneck": bottleneck,
           "shared": shared, "hidden": hidden} | _parse_options(option)
    options = method_options(method, raw)
    config = TrainConfig(lr=lr, weight_decay=weight_decay, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                         grad_accum=grad_accum, eval_every=eval_every, eval_batch_size=eval_batch_size,
                         max_source_length=max_source_length, seed=seed, mode=mode)  # type: ignore[arg-type]
    out = out or Path(f"{spec.name}-{method}.safetensors")
    log = log or out.with_suffix(".metrics.jsonl")
    if alias and not publish:
        common.fail("--alias needs --publish")
    init_from = _init_source(method, options, init_from)
    bb = load_backbone(backbone, tokenizer=tokenizer, dropout=dropout, device=device, dtype=dtype)  # type: ignore[arg-type]
    init_prompt, parent = resolve_init(init_from, bb, registry)
    if init_prompt is not None:
        options.setdefault("n_tokens", int(init_prompt.shape[0]))  # the source's length unless told
    source_tensor = resolve_sources(sources, bb, registry)
    if source_tensor is not None:
        options.setdefault("n_tokens", int(source_tensor.shape[1]))  # ATTEMPT mixes prompts of the sources' length
        parent = parent or sources
    with TrainProgress(enabled=not json_out) as progress:
        result, path = train_to_artifact(
            bb, spec, method, options, config, out=out, data_dir=data_dir, max_train=max_train_samples,
            max_eval=max_eval_samples, log_path=log, on_event=progress.update, init_prompt=init_prompt,
            sources=source_tensor, parent=parent,
        )
    summary: dict[str, Any] = {"artifact": str(path), "log": str(log), "task": spec.name, "method": method,
                               "trainable_params": result.method.num_trainable(), "best_step": result.best_step,
                               "steps": result.artifact.meta.steps, "metrics": result.artifact.meta.metrics}
    if publish:
        from spp.registry import Registry

        version, _ = Registry(registry).publish(path, aliases=[alias] if alias else ())
        summary["published"] = version.ref
    _report_train(summary, json_out)


def _init_source(method: str, options: dict[str, Any], init_from: str | None) -> str | None:
    """`--init-from REF` and `--init artifact:PATH` both name a prompt to start from."""
    import dataclasses

    from spp.prompts.methods import get_method

    init = str(options.get("init") or "")
    if init.startswith("artifact:"):
        if init_from:
            common.fail("give either --init-from or --init artifact:PATH, not both")
        return init[len("artifact:"):]
    if init_from:
        if "init" not in {f.name for f in dataclasses.fields(get_method(method).config_cls)}:
            common.fail(f"--init-from needs a method that starts from a prompt (simple); {method} does not")
        options["init"] = f"artifact:{init_from}"
    return init_from


def _parse_options(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            common.fail(f"--option takes KEY=VALUE, got {item!r}")
        try:
            values[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            values[key.replace("-", "_")] = value
    return values


def _report_train(summary: dict[str, Any], json_out: bool) -> None:
    if json_out:
        common.print_json(summary)
        return
    c = common.console
    c.print(f"[green]wrote[/] {summary['artifact']}  ({summary['trainable_params']:,} trainable parameters, "
            f"best step {summary['best_step']} of {summary['steps']})")
    for split, values in summary["metrics"].items():
        c.print(f"  {split:<10} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if "published" in summary:
        c.print(f"[green]published[/] {summary['published']}")
    c.print(f"  log: {summary['log']}")


def eval_cmd(
    artifact: Annotated[str, typer.Argument(help="A .safetensors artifact or a registry reference (rte, rte@3, rte@prod).")],
    task: Annotated[Optional[str], typer.Option(help="Task name or spec file \\[default: the artifact's own task].")] = None,
    data_dir: DataDir = None,
    split: Annotated[str, typer.Option(help="train, validation or test (must have labels).")] = "validation",
    backbone: Annotated[Optional[str], typer.Option("--backbone", "-b", help="Backbone \\[default: the artifact's].")] = None,
    tokenizer: Tokenizer = None,
    mode: Annotated[str, typer.Option(help="rank or generate (reports invalid_rate).")] = "rank",
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 32,
    max_eval_samples: Annotated[Optional[int], typer.Option(help="Evaluate on at most N examples.")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    registry: common.RegistryOpt = None,
    json_out: common.JsonFlag = False,
) -> None:
    """Evaluate a prompt artifact on a task split (rank classification by default)."""
    from spp.cli.progress import count_progress
    from spp.cli.sources import load_prompt_source
    from spp.prompts.backbone import load_backbone
    from spp.prompts.tasks import get_task
    from spp.prompts.tasks import main_score
    from spp.prompts.train.pipeline import evaluate_artifact, task_of

    common.quiet_libraries()
    art, label = load_prompt_source(artifact, registry)
    spec = get_task(task) if task else task_of(art.meta)
    bb = load_backbone(backbone or art.meta.backbone, tokenizer=tokenizer, device=device, dtype=dtype)
    with count_progress(f"eval {spec.name}/{split}", enabled=not json_out) as advance:
        metrics, n = evaluate_artifact(bb, art, spec, split=split, data_dir=data_dir, max_samples=max_eval_samples,
                                       mode=mode, batch_size=batch_size, progress=advance)
    result = {"prompt": label, "task": spec.name, "split": split, "examples": n, "mode": mode,
              "metrics": metrics, "score": main_score(metrics)}
    if json_out:
        common.print_json(result)
        return
    common.console.print(f"{label} on {spec.name}/{split} ({n} examples, {mode}): "
                         + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def methods_cmd(
    backbone: Backbone = DEFAULT_BACKBONE,
    n_tokens: Annotated[Optional[int], typer.Option(help="Prompt length n for every method that has one.")] = None,
    m: Annotated[Optional[int], typer.Option("--m", help="superpos: m.")] = None,
    bottleneck: Annotated[Optional[int], typer.Option(help="residual: bottleneck.")] = None,
    shared: Annotated[Optional[bool], typer.Option("--shared/--per-token", help="residual: shared MLP.")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="ept / ptuning: hidden size.")] = None,
    softmax: Annotated[Optional[bool], typer.Option("--softmax/--no-softmax", help="superpos: softmax ablation.")] = None,
    json_out: common.JsonFlag = False,
) -> None:
    """Trainable parameters of every method on a backbone (no weights are loaded)."""
    from rich.table import Table

    from spp.prompts.train.pipeline import method_param_counts

    common.quiet_libraries()
    opts = {"n_tokens": n_tokens, "m": m, "bottleneck": bottleneck, "shared": shared, "hidden": hidden, "softmax": softmax}
    report = method_param_counts(backbone, opts)
    if json_out:
        common.print_json(report)
        return
    table = Table(title=f"{backbone}: d_model {report['d_model']}, {report['backbone_params']:,} backbone parameters")
    for col in ("method", "n", "trainable", "% of backbone", "lr", "wd", "what it is"):
        table.add_column(col, justify="right" if col in ("n", "trainable", "% of backbone", "lr", "wd") else "left")
    for r in report["methods"]:
        table.add_row(r["method"], str(r["n_tokens"]), f"{r['trainable_params']:,}",
                      f"{100 * r['share_of_backbone']:.4f}", f"{r['default_lr']:g}", f"{r['default_weight_decay']:g}",
                      r["summary"])
    common.console.print(table)


def tasks_cmd(json_out: common.JsonFlag = False) -> None:
    """The built-in tasks: template, label words and metrics."""
    from rich.table import Table

    from spp.prompts.tasks import get_task, task_names

    specs = [get_task(n) for n in task_names()]
    if json_out:
        common.print_json([s.to_dict() for s in specs])
        return
    table = Table(title="built-in tasks (or pass a custom spec file)")
    for col in ("task", "template", "label words", "metrics"):
        table.add_column(col)
    for s in specs:
        table.add_row(s.name, s.template, " / ".join(s.label_words), ", ".join(s.metrics))
    common.console.print(table)


def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the demo backbone, data and artifacts.")] = Path("spp-demo"),
    steps: Annotated[int, typer.Option(help="Training steps per prompt.")] = 150,
    method: Annotated[str, typer.Option(help="Prompt method to train.")] = "superpos",
    json_out: common.JsonFlag = False,
) -> None:
    """Offline end to end: build a tiny T5, write two tasks, train and evaluate a prompt for each."""
    from spp.cli.progress import TrainProgress
    from spp.prompts.demo.run import run_demo

    common.quiet_libraries()
    with TrainProgress(enabled=not json_out) as progress:
        report = run_demo(out, steps=steps, method=method, on_event=progress.update, on_stage=progress.stage)
    if json_out:
        common.print_json(report)
        return
    c = common.console
    for task in report["tasks"]:
        c.print(f"[green]{task['task']}[/]: accuracy {task['accuracy_before']:.3f} before training, "
                f"{task['test']['accuracy']:.3f} after (test) -> {task['artifact']}")
    c.print("\nNext steps:")
    for line in report["next"]:
        c.print(f"  {line}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("methods")(methods_cmd)
    app.command("tasks")(tasks_cmd)
    app.command("demo")(demo_cmd)
