"""spp CLI: the prompt registry (publish, list, show, alias set/rm, tag, deprecate, rm, verify, gc,
registry migrate/copy).

Registry errors are SppError subclasses, so the root app turns them into one line and exit 2;
`spp verify` exits 1 when it finds corrupt blobs. Hub and PEFT sharing: :mod:`spp.cli.sharing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from spp.cli import common
from spp.cli.options import Aliases, JsonFlag, RegistryOpt, Ref, Tags


def open_registry(location: str | None):
    """The registry at ``location``: a directory or postgresql://...?store=... (None: $SPP_REGISTRY,
    else $SPP_HOME, else the per-user data dir)."""
    from spp.registry import Registry

    return Registry(location)


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def publish_cmd(
    artifact: Annotated[Path, typer.Argument(help="The .safetensors artifact to publish.", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Registry name \\[default: the artifact's task].")] = None,
    alias: Aliases = [],
    tag: Tags = [],
    registry: RegistryOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Validate an artifact, store it by sha256 and print its reference (same content: same version)."""
    from spp.registry import PublishError, parse_tags

    reg = open_registry(registry)
    version, created = reg.publish(artifact, name=name, aliases=alias, tags=parse_tags(tag, error=PublishError))
    if json_out:
        common.print_json({"ref": version.ref, "created": created, "version": version.to_dict()})
    elif created:
        common.console.print(f"[green]published[/] {version.ref}  (sha256 {version.sha256[:12]})", highlight=False)
    else:
        common.console.print(f"{version.ref} already holds this content (sha256 {version.sha256[:12]})", highlight=False)


def list_cmd(
    task: Annotated[Optional[str], typer.Option(help="Only this task.")] = None,
    method: Annotated[Optional[str], typer.Option(help="Only this method.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Only this backbone.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Only this name.")] = None,
    tag: Tags = [],
    deprecated: Annotated[bool, typer.Option("--deprecated/--no-deprecated", help="Include deprecated versions.")] = True,
    registry: RegistryOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """List published versions (filters combine with AND)."""
    from spp.registry import parse_tags

    versions = open_registry(registry).list(
        task=task, method=method, backbone=backbone, name=name, tags=parse_tags(tag), include_deprecated=deprecated
    )
    if json_out:
        common.print_json([v.to_dict() for v in versions])
        return
    if not versions:
        common.console.print("no published prompts match")
        return
    from rich.table import Table

    table = Table(title=f"{len(versions)} version(s)")
    for column in ("name", "version", "task", "method", "backbone", "main metric", "aliases", "created"):
        table.add_column(column, justify="right" if column in ("version", "main metric") else "left")
    for v in versions:
        table.add_row(
            v.name, str(v.version) + (" (deprecated)" if v.deprecated else ""), v.task, v.method, v.backbone,
            _metric(v.main_metric), ", ".join(v.aliases), v.created_at.replace("T", " ")[:16],
            style="dim" if v.deprecated else None,
        )
    common.console.print(table)


def show_cmd(ref: Ref, registry: RegistryOpt = None, json_out: JsonFlag = False) -> None:
    """Metadata, metrics and lineage of one version (its blob is integrity-checked)."""
    reg = open_registry(registry)
    version, artifact = reg.load(ref)
    meta = artifact.meta
    details: dict[str, Any] = {
        **version.to_dict(),
        "blob": reg.blob_location(version),
        "lineage": reg.lineage(version),
        "artifact": {
            "backbone_revision": meta.backbone_revision, "method_config": meta.method_config,
            "trainable_params": meta.trainable_params, "hparams": meta.hparams, "seed": meta.seed,
            "dataset": meta.dataset, "steps": meta.steps, "wall_time_s": meta.wall_time_s,
            "created_at": meta.created_at, "spp_version": meta.spp_version, "task_spec": meta.task_spec,
            "state_tensors": sorted(artifact.state),
        },
    }
    if json_out:
        common.print_json(details)
        return
    _print_show(details)


def _print_show(d: dict[str, Any]) -> None:
    from rich.table import Table

    art = d["artifact"]
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    rows = [
        ("reference", d["ref"] + ("  [red](deprecated)[/]" if d["deprecated"] else "")),
        ("task", d["task"]), ("method", d["method"]), ("backbone", d["backbone"]),
        ("fingerprint", d["fingerprint"]), ("prompt", f"{d['n_tokens']} x {d['d_model']}"),
        ("trainable params", f"{art['trainable_params']:,}"), ("method config", str(art["method_config"])),
        ("aliases", ", ".join(d["aliases"]) or "-"),
        ("tags", ", ".join(f"{k}={v}" for k, v in d["tags"].items()) or "-"),
        ("sha256", d["sha256"]), ("size", f"{d['size']:,} bytes"), ("blob", d["blob"]),
        ("published", d["created_at"]), ("trained", f"{art['steps']} steps, {art['wall_time_s']} s, seed {art['seed']}"),
        ("parents", " <- ".join(d["lineage"]["ancestors"]) or "-"),
        ("children", ", ".join(d["lineage"]["children"]) or "-"),
    ]
    for key, value in rows:
        info.add_row(key, str(value))
    common.console.print(info)
    if d["metrics"]:
        table = Table(title="metrics")
        for column in ("split", "metric", "value"):
            table.add_column(column)
        for split, values in d["metrics"].items():
            for metric, value in values.items():
                table.add_row(split, metric, f"{value:.4f}")
        common.console.print(table)


def alias_set_cmd(ref: Ref, alias: Annotated[str, typer.Argument(help="Alias name (e.g. prod).")], registry: RegistryOpt = None) -> None:
    """Point NAME@ALIAS at the version REF resolves to (an atomic move if it exists)."""
    version = open_registry(registry).set_alias(ref, alias)
    common.console.print(f"{version.name}@{alias} -> {version.ref}", highlight=False)


def alias_rm_cmd(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    registry: RegistryOpt = None,
) -> None:
    """Remove an alias (the version stays)."""
    open_registry(registry).remove_alias(name, alias)
    common.console.print(f"removed alias {name}@{alias}", highlight=False)


def tag_cmd(
    ref: Ref,
    tags: Annotated[list[str], typer.Argument(help="KEY=VALUE ... (KEY= removes the tag).", show_default=False)],
    registry: RegistryOpt = None,
) -> None:
    """Set tags on a version."""
    from spp.registry import parse_tags

    version = open_registry(registry).tag(ref, parse_tags(tags))
    shown = ", ".join(f"{k}={v}" for k, v in version.tags.items()) or "no tags"
    common.console.print(f"{version.ref}: {shown}", highlight=False)


def deprecate_cmd(
    ref: Ref,
    undo: Annotated[bool, typer.Option("--undo", help="Remove the deprecation mark.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Mark a version deprecated: a bare NAME then resolves to the newest non-deprecated one."""
    version = open_registry(registry).deprecate(ref, deprecated=not undo)
    common.console.print(f"{version.ref} {'deprecated' if version.deprecated else 'no longer deprecated'}", highlight=False)


def rm_cmd(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS (never a bare name).", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Also remove aliases that point at it.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Delete one version; refused while an alias points at it unless --force."""
    version = open_registry(registry).remove(ref, force=force)
    common.console.print(f"removed {version.ref}", highlight=False)


def verify_cmd(registry: RegistryOpt = None, json_out: JsonFlag = False) -> None:
    """Re-hash every blob; exits 1 naming each corrupt version."""
    reg = open_registry(registry)
    checked = len(reg.list())
    bad = reg.verify()
    if json_out:
        common.print_json({"checked": checked, "ok": not bad, "corrupt": [{"ref": v.ref, "reason": r} for v, r in bad]})
    else:
        for v, reason in bad:
            common.err_console.print(f"[bold red]corrupt[/] {v.ref}: {reason}", highlight=False, soft_wrap=True)
        if not bad:
            common.console.print(f"[green]ok[/]: {checked} version(s) verified")
    if bad:
        raise typer.Exit(1)


def gc_cmd(
    grace: Annotated[float, typer.Option(
        "--grace", min=0, metavar="SECONDS",
        help="Remove temp files older than this; younger ones may be publishes still running (0: all).",
    )] = 3600.0,
    registry: RegistryOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Remove blobs no version refers to (and temp files left by crashed publishes)."""
    removed = open_registry(registry).gc(temp_grace_s=grace)
    if json_out:
        common.print_json({"removed": [str(p) for p in removed]})
        return
    for path in removed:
        common.console.print(f"removed {path}", highlight=False)
    common.console.print(f"{len(removed)} file(s) removed")


def migrate_cmd(registry: RegistryOpt = None, json_out: JsonFlag = False) -> None:
    """Upgrade the registry's index schema in place.

    Needed once for a shared registry after an spp upgrade; a directory registry upgrades
    itself when opened."""
    reg = open_registry(registry)
    before, after = reg.migrate()
    if json_out:
        common.print_json({"registry": reg.location.display, "from": before, "to": after})
    elif before == after:
        common.console.print(f"{reg.location.display}: schema already at revision {after}", highlight=False)
    else:
        common.console.print(f"{reg.location.display}: schema {before or 'empty'} -> {after}", highlight=False)


def copy_cmd(
    source: Annotated[str, typer.Argument(help="Registry to copy from (directory or postgresql://...).", show_default=False)],
    destination: Annotated[str, typer.Argument(help="Registry to copy into.", show_default=False)],
    json_out: JsonFlag = False,
) -> None:
    """Copy every version (same numbers), alias and tag from SOURCE into DESTINATION.

    Every blob's sha256 is checked on both sides; safe to run again after an interruption."""
    from spp.registry.copy import copy_registry

    src, dst = open_registry(source), open_registry(destination)
    report = copy_registry(src, dst)
    if json_out:
        common.print_json(report.to_dict())
        return
    common.console.print(
        f"copied {len(report.copied)} version(s) and {report.aliases} alias(es) from {src.location.display} "
        f"to {dst.location.display}; {len(report.present)} already there", highlight=False,
    )


def rebuild_index_cmd(registry: RegistryOpt = None, json_out: JsonFlag = False) -> None:
    """Rebuild a lost index from the blob store's ledger (the index must be new and empty).

    Every version comes back under its own number; aliases, tags and deprecation marks live
    only in the index and are not restored."""
    reg = open_registry(registry)
    rebuilt, skipped = reg.rebuild_index()
    if json_out:
        common.print_json({"rebuilt": rebuilt, "skipped": skipped})
        return
    for ref in skipped:
        common.err_console.print(f"[bold red]skipped[/] {ref}: blob missing or corrupt", highlight=False)
    common.console.print(f"rebuilt {len(rebuilt)} version(s) in {reg.location.display}", highlight=False)
    if skipped:
        raise typer.Exit(1)
