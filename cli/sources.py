"""Where prompts come from on the command line: a .safetensors file or a registry reference."""

from __future__ import annotations

from pathlib import Path

import torch

from spp.prompts.artifact import Artifact, load_artifact
from spp.prompts.backbone import Backbone
from spp.prompts.errors import SppError


def load_prompt_source(source: str, registry: str | None) -> tuple[Artifact, str]:
    """(artifact, label): a path ending in .safetensors is a file, anything else a registry ref."""
    if source.endswith(".safetensors") or Path(source).is_file():
        return load_artifact(source), source
    from spp.registry import Registry

    version, artifact = Registry(registry).load(source)
    return artifact, version.ref


def resolve_init(source: str | None, backbone: Backbone, registry: str | None) -> tuple[torch.Tensor | None, str | None]:
    """SPoT initialisation: the source prompt (checked against the backbone) and its label."""
    if not source:
        return None, None
    artifact, label = load_prompt_source(source, registry)
    backbone.check_prompt(artifact.meta.fingerprint, artifact.meta.d_model, what=f"init prompt {label}")
    return artifact.prompt, label


def resolve_sources(sources: str | None, backbone: Backbone, registry: str | None) -> torch.Tensor | None:
    """ATTEMPT's source prompts as one (k, n, e) tensor; all must share n."""
    if not sources:
        return None
    prompts = []
    for ref in [s.strip() for s in sources.split(",") if s.strip()]:
        artifact, label = load_prompt_source(ref, registry)
        backbone.check_prompt(artifact.meta.fingerprint, artifact.meta.d_model, what=f"source prompt {label}")
        prompts.append((label, artifact.prompt))
    lengths = {p.shape[0] for _, p in prompts}
    if len(lengths) > 1:
        detail = ", ".join(f"{label}: n={p.shape[0]}" for label, p in prompts)
        raise SppError(f"source prompts must have the same n_tokens ({detail})")
    return torch.stack([p for _, p in prompts])  # (k, n, e)
