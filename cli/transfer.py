"""`spp transfer`: every source prompt on every target task, or `--recommend T` source prompts for T."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from spp.cli import common
from spp.cli.options import (
    Device, Dtype, JsonFlag, PromptBackbone, RegistryOpt, Revision, Shards, Split, Tokenizer,
)

Refs = Annotated[
    Optional[str],
    typer.Option("--prompts", "-p", help="Source prompts REF,REF,... (registry refs like rte@3 or .safetensors files) "
                 "(default: the latest version of every prompt in the registry)."),
]

# the row count is spp.prompts.transfer.compute.AUTO_COMPILE_ROWS (kept equal by a test; importing
# it here would import torch for every `spp` command)
Compile = Annotated[Optional[bool], typer.Option(
    "--compile/--no-compile", help="torch.compile the backbone's forwards: ~13% faster scoring after 4-19 s of "
    "compiling (a T5 on a CPU, unpadded forwards; 30-50 s for padded ones); eager if compiling fails. Default: on "
    "for matrices of 8000 or more (example, prompt) rows where the forwards run unpadded.", show_default=False)]


def _split_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def load_sources(refs: str | None, registry: str | None) -> list[Any]:
    """TransferSource per reference, labelled ``name@version`` (registry) or the file name."""
    from spp.cli.sources import load_prompt_source
    from spp.prompts.transfer.compute import TransferError, TransferSource

    items = _split_list(refs)
    if not items:
        from spp.registry import NotFoundError, Registry

        with Registry(registry) as reg:
            for name in reg.names():
                try:
                    items.append(reg.resolve(name).ref)
                except NotFoundError:  # every version deprecated: not a source by default
                    continue
        if not items:
            raise TransferError(f"no prompts given and the registry at {reg.root} has none; pass --prompts REF,...")
    sources, seen = [], Counter()
    for ref in items:
        artifact, label = load_prompt_source(ref, registry)
        label = Path(label).stem if label.endswith(".safetensors") else label
        seen[label] += 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"  # the same file or version given twice
        sources.append(TransferSource(label=label, artifact=artifact, ref=ref))
    return sources


def transfer_cmd(
    prompts: Refs = None,
    tasks: Annotated[Optional[str], typer.Option(help="Target tasks T,T,... (names or spec files) "
                                                 "(default: the tasks of the prompts).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local data: DIR/<task>/ per task if present, else DIR "
                                                     "itself. Default: each spec's own files or the Hub.")] = None,
    split: Split = "validation",
    max_examples: Annotated[Optional[int], typer.Option(help="Evaluate on at most N examples per task (seeded).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder: transfer.json, transfer.csv, report.md, "
                                                "heatmap.png (required for the matrix).")] = None,
    recommend: Annotated[Optional[str], typer.Option(help="Rank the prompts as initialisations for task T by "
                                                     "similarity to a short probe prompt trained on T.")] = None,
    probe_steps: Annotated[int, typer.Option(help="--recommend: training steps of the probe prompt.")] = 50,
    by: Annotated[str, typer.Option(help="--recommend: mean_cosine or token_cosine.")] = "mean_cosine",
    top_k: Annotated[int, typer.Option(help="Best sources listed per target.")] = 3,
    batch_size: Annotated[int, typer.Option(help="(example, prompt) rows per forward pass.")] = 64,
    compile: Compile = None,
    shards: Shards = None,
    seed: Annotated[int, typer.Option(help="Seed of --max-examples sampling and of the probe.")] = 0,
    backbone: PromptBackbone = None,
    revision: Revision = None,
    tokenizer: Tokenizer = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    registry: RegistryOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Zero-shot cross-task transfer: each prompt on each task's evaluation split, with the task's
    template and label words. Scores all prompts over a task's examples in mixed-prompt batches."""
    from spp.prompts.config import check_choice, check_int
    from spp.prompts.transfer import SIMILARITIES, TransferConfig, TransferError, check_sources

    common.quiet_libraries()
    config = TransferConfig(batch_size=batch_size, top_k=top_k, compile=compile, shards=shards)
    if recommend:  # the probe's options are checked before any prompt or weight is loaded
        check_int("--probe-steps", probe_steps, TransferError)
        check_choice("--by", by, SIMILARITIES, TransferError)
    sources = load_sources(prompts, registry)
    bb_args = (backbone, revision, tokenizer, device, dtype)
    if recommend:
        _recommend(recommend, sources, data_dir=data_dir, steps=probe_steps, by=by, seed=seed, out=out,
                   bb_args=bb_args, json_out=json_out)
        return
    if out is None:
        common.fail("--out DIR is required for the transfer matrix")
    check_sources(sources)  # before loading anything: too few prompts, mixed backbones
    bb = _backbone(sources, *bb_args)
    targets = _targets(tasks, sources, split=split, data_dir=data_dir, max_examples=max_examples, seed=seed)
    _run_matrix(bb, sources, targets, config, out, json_out)


def _backbone(sources: list[Any], name: str | None, revision: str | None, tokenizer: str | None, device: str,
              dtype: str):
    from spp.prompts.backbone import load_backbone

    return load_backbone(name or sources[0].artifact.meta.backbone, revision=revision, tokenizer=tokenizer,
                         device=device, dtype=dtype)


def _targets(tasks: str | None, sources: list[Any], **kwargs: Any) -> list[Any]:
    from spp.prompts.transfer.compute import load_target, resolve_task

    names = _split_list(tasks) or list(dict.fromkeys(s.task for s in sources))
    return [load_target(resolve_task(n, sources), kwargs["split"], data_dir=kwargs["data_dir"],
                        max_examples=kwargs["max_examples"], seed=kwargs["seed"]) for n in names]


def _run_matrix(bb: Any, sources: list[Any], targets: list[Any], config: Any, out: Path, json_out: bool) -> None:
    from spp.cli.progress import count_progress
    from spp.prompts.transfer.compute import compute_transfer
    from spp.prompts.transfer.report import write_report

    total = len(sources) * sum(len(t) for t in targets)
    desc = f"transfer {len(sources)} prompts x {len(targets)} tasks"
    with count_progress(desc, enabled=not json_out, total=total) as advance:
        result = compute_transfer(bb, sources, targets, config, progress=advance)
    paths = write_report(result, out, top_k=config.top_k)
    if json_out:
        common.print_json({"out": str(out), "files": {k: str(v) for k, v in paths.items()},
                           "raw": result.raw, "relative": result.relative,
                           "sources": result.source_labels, "targets": result.target_names})
        return
    _print_matrix(result)
    common.console.print(f"[green]wrote[/] {', '.join(p.name for p in paths.values())} to {out}")


def _print_matrix(result: Any) -> None:
    from rich.table import Table

    table = Table(title="zero-shot transfer: main score (share of the target's own prompt)")
    table.add_column("source \\ target", style="bold")
    for name in result.target_names:
        table.add_column(name, justify="right")
    for i, label in enumerate(result.source_labels):
        cells = []
        for j in range(len(result.targets)):
            rel = result.relative[i][j]
            text = f"{result.raw[i][j]:.3f}" + (f" ({rel:.0%})" if rel is not None else "")
            cells.append(f"[bold green]{text}[/]" if result.own[j] == i else text)
        table.add_row(label, *cells)
    common.console.print(table)
    for name, c in result.correlation.items():
        detail = c.note or f"Spearman {c.spearman:.3f}, Pearson {c.pearson:.3f}"
        common.console.print(f"  similarity {name} vs transfer ({c.n_pairs} pairs): {detail}")


def _recommend(task: str, sources: list[Any], *, data_dir: Path | None, steps: int, by: str, seed: int,
               out: Path | None, bb_args: tuple, json_out: bool) -> None:
    from spp.cli.progress import TrainProgress
    from spp.prompts.transfer import check_sources, load_target, rank_by_similarity, resolve_task
    from spp.prompts.transfer import train_probe

    check_sources(sources, minimum=1)  # one backbone for all candidates
    spec = resolve_task(task, sources)
    bb = _backbone(sources, *bb_args)
    data = load_target(spec, "train", data_dir=data_dir, max_examples=16 * steps, seed=seed)
    n = Counter(s.artifact.meta.n_tokens for s in sources).most_common(1)[0][0]  # the usual length
    with TrainProgress(enabled=not json_out, description=f"probe {spec.name}") as progress:
        probe = train_probe(bb, data, steps=steps, n_tokens=n, seed=seed, on_event=progress.update)
    recs = rank_by_similarity(probe, sources, by=by)
    doc = {"task": spec.name, "probe_steps": steps, "probe_tokens": n, "by": by,
           "ranking": [vars(r) | {"rank": k + 1, "same_task": r.task == spec.name} for k, r in enumerate(recs)]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recommend.json").write_text(json.dumps(doc, indent=2) + "\n")
    if json_out:
        common.print_json(doc)
        return
    _print_recommend(doc)


def _print_recommend(doc: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"initialisations for {doc['task']} (probe: {doc['probe_steps']} steps, by {doc['by']})")
    for col in ("rank", "prompt", "task", "mean_cosine", "token_cosine"):
        table.add_column(col, justify="right" if col in ("rank", "mean_cosine", "token_cosine") else "left")
    for r in doc["ranking"]:
        task = r["task"] + (" (same task)" if r["same_task"] else "")
        table.add_row(str(r["rank"]), r["label"], task, f"{r['mean_cosine']:.4f}", f"{r['token_cosine']:.4f}")
    common.console.print(table)

