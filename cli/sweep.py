"""`spp sweep` (a grid of trials on Ray Tune) and `spp report` (the papers' tables and figures).

Ray is optional: without it `spp sweep` is one line naming the pip install. Heavy imports stay
inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from spp.cli import common
from spp.cli.options import JsonFlag, RegistryOpt


def sweep_cmd(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (TOML): tasks, methods and options, dropout, seeds, backbones, lrs, steps.")],
    resume: Annotated[bool, typer.Option(help="Continue the sweep in the spec's storage path: run only unfinished trials.")] = False,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (HOST:PORT, ray://HOST:PORT, auto) \\[default: a local Ray].")] = None,
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs of the local Ray \\[default: the machine's].")] = None,
    num_gpus: Annotated[Optional[int], typer.Option(help="GPUs of the local Ray \\[default: the machine's].")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial (also its torch threads).")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per trial; fractions pack trials on one GPU.")] = 0.0,
    checkpoint_every: Annotated[int, typer.Option(help="Trial checkpoint every N steps (0: at every validation).")] = 0,
    registry: RegistryOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Run every cell of a grid as a Ray Tune trial; each finished trial is published once, tagged
    sweep/task/method/dropout/seed. A failed trial never stops the others; its error is kept."""
    from spp.cli.progress import SweepProgress
    from spp.sweep.runner import Resources, check_ray, run_sweep
    from spp.sweep.spec import load_spec

    check_ray()
    sweep_spec = load_spec(spec)
    reg_root = _registry_location(registry or sweep_spec.registry)
    resources = Resources(num_cpus=num_cpus, num_gpus=num_gpus, cpus_per_trial=cpus_per_trial,
                          gpus_per_trial=gpus_per_trial)
    with SweepProgress(enabled=not json_out, title=f"sweep {sweep_spec.name}") as progress:
        summary = run_sweep(sweep_spec, registry=reg_root, resume=resume, address=address, resources=resources,
                            checkpoint_every=checkpoint_every, on_event=progress.update)
    report = {"sweep": sweep_spec.name, "storage": str(summary.storage), "registry": reg_root,
              "done": {k: v["ref"] for k, v in summary.done.items()},
              "failed": {k: v["error"] for k, v in summary.failed.items()}, "pending": summary.pending,
              "wall_s": round(summary.wall_s, 2)}
    if json_out:
        common.print_json(report)
    else:
        _print_sweep(report)
    if summary.failed or summary.pending:
        raise typer.Exit(1)


def _registry_location(value: object) -> str:
    """The registry as every trial worker must see it: an absolute directory, or a URL as given
    (a shared PostgreSQL + fsspec registry)."""
    from spp.registry.core import default_root

    if value is None:
        return str(default_root().resolve())
    text = str(value)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def _print_sweep(report: dict[str, Any]) -> None:
    c = common.console
    c.print(f"sweep {report['sweep']}: [green]{len(report['done'])} done[/], [red]{len(report['failed'])} failed[/], "
            f"{len(report['pending'])} unfinished in {report['wall_s']:.1f} s  (storage {report['storage']})")
    for trial, error in report["failed"].items():
        c.print(f"  [red]failed[/] {trial}: {error}", highlight=False, soft_wrap=True)
    if report["failed"] or report["pending"]:
        c.print("  rerun with --resume to retry the unfinished trials")


def report_cmd(
    sweep: Annotated[Optional[str], typer.Argument(help="Sweep name (its `sweep` tag in the registry).")] = None,
    tag: Annotated[list[str], typer.Option("--tags", "--tag", help="Select versions by tag KEY=VALUE instead (repeatable).")] = [],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the PNGs.")] = Path("spp-report"),
    storage: Annotated[Optional[Path], typer.Option(help="The sweep's storage path, for learning curves \\[default: the trials' logs if found].")] = None,
    registry: RegistryOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Table 1 (mean ± std over seeds), standardized overall scores, the papers' numbers beside
    ours, learning curves, EPT prompt norms and SuperPos p' similarity, from published runs."""
    from spp.registry import Registry
    from spp.registry.refs import parse_tags
    from spp.sweep.report import write_report

    tags = parse_tags(tag)
    if sweep:
        tags["sweep"] = sweep
    if not tags:
        common.fail("give a sweep name or --tags KEY=VALUE")
    with Registry(registry) as reg:
        result = write_report(reg, tags, out, storage=storage)
    if json_out:
        common.print_json(result["summary"])
        return
    common.console.print(result["markdown_table"], highlight=False, soft_wrap=True)
    common.console.print(f"[green]wrote[/] {out / 'report.md'} ({len(result['summary']['figures'])} figures)")
