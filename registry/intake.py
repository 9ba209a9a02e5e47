"""What `Registry.publish` accepts: untrusted bytes from anywhere, bounded and validated.

A file is read only if it is a regular file of at most MAX_ARTIFACT_BYTES (never /dev/zero or a
FIFO); the bytes must decode as an spp artifact (header, metadata, template, prompt shape, finite
values) with numeric metrics. Every refusal is a one-line PublishError.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spp.prompts.artifact.files import MAX_ARTIFACT_BYTES, FileReadError, read_bounded
from spp.registry.errors import PublishError

if TYPE_CHECKING:
    from spp.prompts.artifact import Artifact, ArtifactMeta


def source_bytes(source: "str | os.PathLike[str] | Artifact | bytes") -> tuple[bytes, str]:
    """The bytes to publish and a label naming them in messages."""
    from spp.prompts.artifact import Artifact, ArtifactError, artifact_bytes

    if isinstance(source, Artifact):
        try:
            return artifact_bytes(source), f"artifact for task {source.meta.task!r}"
        except ArtifactError as exc:
            raise PublishError(f"cannot publish artifact for task {source.meta.task!r}: {exc}") from None
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_ARTIFACT_BYTES:
            raise PublishError(f"cannot publish <bytes>: {len(source)} bytes, more than the maximum of {MAX_ARTIFACT_BYTES}")
        return bytes(source), "<bytes>"
    path = Path(source)
    try:  # a file from anywhere: regular files up to MAX_ARTIFACT_BYTES only (never /dev/zero)
        return read_bounded(path), str(path)
    except FileReadError as exc:
        raise PublishError(f"cannot publish {exc}") from None
    except OSError as exc:
        raise PublishError(f"cannot publish {path}: {exc.strerror or exc}") from None


def validate_artifact(data: bytes, label: str) -> "ArtifactMeta":
    """Header, required metadata, prompt shape n x d_model, finite values, numeric metrics."""
    from spp.prompts.artifact import ArtifactError, decode

    try:
        artifact = decode(data)
    except ArtifactError as exc:
        raise PublishError(f"cannot publish {label}: {exc}") from None
    _check_metrics(artifact.meta.metrics, label)
    return artifact.meta


def _check_metrics(metrics: Any, label: str) -> None:
    ok = isinstance(metrics, dict) and all(
        isinstance(split, dict)
        and all(isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool) for k, x in split.items())
        for split in metrics.values()
    )
    if not ok:
        raise PublishError(f"cannot publish {label}: metadata 'metrics' must map split -> metric name -> number")
    if any(not math.isfinite(x) for split in metrics.values() for x in split.values()):
        raise PublishError(f"cannot publish {label}: metadata 'metrics' contains NaN or infinite values")
