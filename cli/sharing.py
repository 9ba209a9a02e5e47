"""spp CLI: sharing prompts beyond the registry: Hub repos (push, pull) and PEFT prompt-tuning
adapters (export, import-peft). Everything read from outside is untrusted (see spp.registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spp.cli import common
from spp.cli.options import Aliases, HubToken, RegistryOpt, Ref, Tags
from spp.cli.registry import open_registry


def push_cmd(
    ref: Ref,
    repo: Annotated[str, typer.Option("--repo", help="Hub repo OWNER/NAME (created if missing).", show_default=False)],
    private: Annotated[Optional[bool], typer.Option(
        "--private/--public", help="Visibility of a new repo \\[default: the Hub's, e.g. your organisation's].",
        show_default=False,
    )] = None,
    revision: Annotated[Optional[str], typer.Option(
        help="Branch to push to, created if missing (or an existing refs/pr/N) \\[default: main].",
    )] = None,
    token: HubToken = None,
    registry: RegistryOpt = None,
) -> None:
    """Upload a version (artifact + model card with base_model and model-index metrics) to the Hub."""
    from spp.registry.hub import push

    url = push(open_registry(registry), ref, repo, token=token, private=private, revision=revision)
    common.console.print(f"[green]pushed[/] {ref} to {repo}: {url}", highlight=False)


def pull_cmd(
    spec: Annotated[str, typer.Argument(help="Hub repo OWNER/NAME[@REVISION].", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Registry name \\[default: the card's, else the task].")] = None,
    alias: Aliases = [],
    token: HubToken = None,
    registry: RegistryOpt = None,
) -> None:
    """Download a pushed prompt and publish it into the local registry."""
    from spp.registry.hub import pull

    version, created = pull(open_registry(registry), spec, name=name, aliases=alias, token=token)
    verb = "pulled" if created else "already present:"
    common.console.print(f"[green]{verb}[/] {spec} -> {version.ref}", highlight=False)


def export_cmd(
    ref: Ref,
    peft: Annotated[Path, typer.Option("--peft", help="Output directory for a PEFT prompt-tuning adapter.", show_default=False)],
    registry: RegistryOpt = None,
) -> None:
    """Export a version as a PEFT adapter (adapter_model.safetensors + adapter_config.json)."""
    from spp.registry.peft_io import export_peft

    version, artifact = open_registry(registry).load(ref)
    out = export_peft(artifact, peft)
    common.console.print(f"[green]exported[/] {version.ref} as a PEFT adapter in {out}", highlight=False)


def import_peft_cmd(
    adapter: Annotated[Path, typer.Argument(help="PEFT prompt-tuning adapter directory.", show_default=False)],
    task: Annotated[Optional[str], typer.Option(help="Task name or spec file (required for adapters not exported by spp).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Registry name \\[default: the task].")] = None,
    backbone: Annotated[Optional[str], typer.Option(
        "--backbone", "-b", help="Backbone to fingerprint a foreign adapter with \\[default: its base_model_name_or_path]."
    )] = None,
    allow_base_mismatch: Annotated[bool, typer.Option(
        "--allow-base-mismatch", help="Import even though --backbone is not the adapter's base_model_name_or_path.",
    )] = False,
    alias: Aliases = [],
    tag: Tags = [],
    registry: RegistryOpt = None,
) -> None:
    """Publish a PEFT prompt-tuning adapter as an spp artifact."""
    from spp.registry import PublishError, parse_tags
    from spp.registry.peft_io import SPP_SIDECAR, import_peft, read_adapter

    config, _ = read_adapter(adapter)  # a broken adapter fails before any backbone is loaded
    bb = None
    if backbone or not (adapter / SPP_SIDECAR).is_file():
        bb = _load_backbone_for(backbone or config.get("base_model_name_or_path"), adapter)
    artifact = import_peft(adapter, task=task, backbone=bb, allow_base_mismatch=allow_base_mismatch)
    version, created = open_registry(registry).publish(
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
