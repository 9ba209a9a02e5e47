"""spp CLI: the prompt registry (publish, list, show, alias, tag, deprecate, rm, verify, gc),
Hub sharing (push, pull) and PEFT interop (export, import-peft).

Registry errors are SppError subclasses, so the root app turns them into one line and exit 2;
`spp verify` exits 1 when it finds corrupt blobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from spp.cli import common

Ref = Annotated[str, typer.Argument(help="Reference: NAME (latest), NAME@VERSION or NAME@ALIAS.", show_default=False)]
Tags = Annotated[list[str], typer.Option("--tag", "-t", help="Tag KEY=VALUE (repeatable).")]
Aliases = Annotated[list[str], typer.Option("--alias", "-a", help="Point this alias at the version (repeatable).")]


def _registry(path: Path | None):
    from spp.registry import Registry

    return Registry(path)


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def publish_cmd(
    artifact: Annotated[Path, typer.Argument(help="The .safetensors artifact to publish.", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Registry name [default: the artifact's task].")] = None,
    alias: Aliases = [],
    tag: Tags = [],
    registry: common.RegistryOpt = None,
    json_out: common.JsonFlag = False,
) -> None:
    """Validate an artifact, store it by sha256 and print its reference (same content: same version)."""
    from spp.registry import PublishError, parse_tags

    reg = _registry(registry)
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
    registry: common.RegistryOpt = None,
    json_out: common.JsonFlag = False,
) -> None:
    """List published versions (filters combine with AND)."""
    from spp.registry import parse_tags

    versions = _registry(registry).list(
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


def show_cmd(ref: Ref, registry: common.RegistryOpt = None, json_out: common.JsonFlag = False) -> None:
    """Metadata, metrics and lineage of one version (its blob is integrity-checked)."""
    reg = _registry(registry)
    version, artifact = reg.load(ref)
    meta = artifact.meta
    details: dict[str, Any] = {
        **version.to_dict(),
        "blob": str(reg.blob_path(version)),
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


def alias_set_cmd(ref: Ref, alias: Annotated[str, typer.Argument(help="Alias name (e.g. prod).")], registry: common.RegistryOpt = None) -> None:
    """Point NAME@ALIAS at the version REF resolves to (an atomic move if it exists)."""
    version = _registry(registry).set_alias(ref, alias)
    common.console.print(f"{version.name}@{alias} -> {version.ref}", highlight=False)


def alias_rm_cmd(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    registry: common.RegistryOpt = None,
) -> None:
    """Remove an alias (the version stays)."""
    _registry(registry).remove_alias(name, alias)
    common.console.print(f"removed alias {name}@{alias}", highlight=False)


def tag_cmd(
    ref: Ref,
    tags: Annotated[list[str], typer.Argument(help="KEY=VALUE ... (KEY= removes the tag).", show_default=False)],
    registry: common.RegistryOpt = None,
) -> None:
    """Set tags on a version."""
    from spp.registry import parse_tags

    version = _registry(registry).tag(ref, parse_tags(tags))
    shown = ", ".join(f"{k}={v}" for k, v in version.tags.items()) or "no tags"
    common.console.print(f"{version.ref}: {shown}", highlight=False)


def deprecate_cmd(
    ref: Ref,
    undo: Annotated[bool, typer.Option("--undo", help="Remove the deprecation mark.")] = False,
    registry: common.RegistryOpt = None,
) -> None:
    """Mark a version deprecated: a bare NAME then resolves to the newest non-deprecated one."""
    version = _registry(registry).deprecate(ref, deprecated=not undo)
    common.console.print(f"{version.ref} {'deprecated' if version.deprecated else 'no longer deprecated'}", highlight=False)


def rm_cmd(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS (never a bare name).", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Also remove aliases that point at it.")] = False,
    registry: common.RegistryOpt = None,
) -> None:
    """Delete one version; refused while an alias points at it unless --force."""
    version = _registry(registry).remove(ref, force=force)
    common.console.print(f"removed {version.ref}", highlight=False)


def verify_cmd(registry: common.RegistryOpt = None, json_out: common.JsonFlag = False) -> None:
    """Re-hash every blob; exits 1 naming each corrupt version."""
    reg = _registry(registry)
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


def gc_cmd(registry: common.RegistryOpt = None, json_out: common.JsonFlag = False) -> None:
    """Remove blobs no version refers to (and temp files left by crashed publishes)."""
    removed = _registry(registry).gc()
    if json_out:
        common.print_json({"removed": [str(p) for p in removed]})
        return
    for path in removed:
        common.console.print(f"removed {path}", highlight=False)
    common.console.print(f"{len(removed)} file(s) removed")


def push_cmd(
    ref: Ref,
    repo: Annotated[str, typer.Option("--repo", help="Hub repo OWNER/NAME (created if missing).", show_default=False)],
    private: Annotated[bool, typer.Option(help="Create the repo as private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to push to [default: main].")] = None,
    token: Annotated[Optional[str], typer.Option(envvar="HF_TOKEN", help="Hub token [default: $HF_TOKEN or login].", show_default=False)] = None,
    registry: common.RegistryOpt = None,
) -> None:
    """Upload a version (artifact + model card with base_model and model-index metrics) to the Hub."""
    from spp.registry.hub import push

    url = push(_registry(registry), ref, repo, token=token, private=private, revision=revision)
    common.console.print(f"[green]pushed[/] {ref} to {repo}: {url}", highlight=False)


def pull_cmd(
    spec: Annotated[str, typer.Argument(help="Hub repo OWNER/NAME[@REVISION].", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Registry name [default: the card's, else the task].")] = None,
    alias: Aliases = [],
    token: Annotated[Optional[str], typer.Option(envvar="HF_TOKEN", help="Hub token.", show_default=False)] = None,
    registry: common.RegistryOpt = None,
) -> None:
    """Download a pushed prompt and publish it into the local registry."""
    from spp.registry.hub import pull

    version, created = pull(_registry(registry), spec, name=name, aliases=alias, token=token)
    verb = "pulled" if created else "already present:"
    common.console.print(f"[green]{verb}[/] {spec} -> {version.ref}", highlight=False)


def export_cmd(
    ref: Ref,
    peft: Annotated[Path, typer.Option("--peft", help="Output directory for a PEFT prompt-tuning adapter.", show_default=False)],
    registry: common.RegistryOpt = None,
) -> None:
    """Export a version as a PEFT adapter (adapter_model.safetensors + adapter_config.json)."""
    from spp.registry.peft_io import export_peft

    version, artifact = _registry(registry).load(ref)
    out = export_peft(artifact, peft)
    common.console.print(f"[green]exported[/] {version.ref} as a PEFT adapter in {out}", highlight=False)


def import_peft_cmd(
    adapter: Annotated[Path, typer.Argument(help="PEFT prompt-tuning adapter directory.", show_default=False)],
    task: Annotated[Optional[str], typer.Option(help="Task name or spec file (required for adapters not exported by spp).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Registry name [default: the task].")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", "-b", help="Backbone to fingerprint a foreign adapter with [default: its base_model_name_or_path].")] = None,
    alias: Aliases = [],
    tag: Tags = [],
    registry: common.RegistryOpt = None,
) -> None:
    """Publish a PEFT prompt-tuning adapter as an spp artifact."""
    from spp.registry import PublishError, parse_tags
    from spp.registry.peft_io import SPP_SIDECAR, import_peft, read_adapter

    config, _ = read_adapter(adapter)  # a broken adapter fails before any backbone is loaded
    bb = None
    if backbone or not (adapter / SPP_SIDECAR).is_file():
        bb = _load_backbone_for(backbone or config.get("base_model_name_or_path"), adapter)
    artifact = import_peft(adapter, task=task, backbone=bb)
    version, created = _registry(registry).publish(
        artifact, name=name, aliases=alias, tags=parse_tags(tag, error=PublishError)
    )
    verb = "published" if created else "already published as"
    common.console.print(f"[green]{verb}[/] {version.ref}", highlight=False)


def _load_backbone_for(backbone: str | None, adapter: Path):
    """The backbone that fingerprints a foreign adapter (CPU, float32, as fingerprints are taken)."""
    from spp.prompts.backbone import load_backbone
    from spp.registry.peft_io import ADAPTER_CONFIG, PeftError

    if not backbone:
        raise PeftError(f"{adapter}: no base_model_name_or_path in {ADAPTER_CONFIG}; pass --backbone")
    common.quiet_libraries()
    return load_backbone(backbone, device="cpu", dtype="float32")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("publish")(publish_cmd)
    app.command("list")(list_cmd)
    app.command("show")(show_cmd)
    alias_app = typer.Typer(help="Move or remove aliases such as rte@prod.", no_args_is_help=True)
    alias_app.command("set")(alias_set_cmd)
    alias_app.command("rm")(alias_rm_cmd)
    app.add_typer(alias_app, name="alias")
    app.command("tag")(tag_cmd)
    app.command("deprecate")(deprecate_cmd)
    app.command("rm")(rm_cmd)
    app.command("verify")(verify_cmd)
    app.command("gc")(gc_cmd)
    app.command("push")(push_cmd)
    app.command("pull")(pull_cmd)
    app.command("export")(export_cmd)
    app.command("import-peft")(import_peft_cmd)
