"""The prompt artifact: one ``.safetensors`` file holding the collapsed prompt and its metadata.

Tensors: ``prompt`` (n, e) float32, plus optional ``state.<name>`` tensors (the method's own
parameters, for resuming or transfer initialisation). Metadata lives in the safetensors
``__metadata__`` header as strings (JSON where structured). Loading never unpickles.
"""

from __future__ import annotations

from spp.prompts.atomic import atomic_write, safetensors_header
from spp.prompts.errors import SppError

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

FORMAT_VERSION = "1"
PROMPT_KEY = "prompt"
STATE_PREFIX = "state."


class ArtifactError(SppError):
    """The file is not a valid spp artifact; the message says why."""


def _spp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spp")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@dataclass
class ArtifactMeta:
    """Everything an artifact records besides tensors. JSON-able values only."""

    task: str
    method: str
    backbone: str
    fingerprint: str
    d_model: int
    n_tokens: int
    method_config: dict[str, Any] = field(default_factory=dict)
    task_spec: dict[str, Any] = field(default_factory=dict)  # template, label words, metrics...
    backbone_revision: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> name -> value
    trainable_params: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)  # id, config, revision, split sizes
    parent: str | None = None  # artifact/reference this prompt was initialised from
    steps: int = 0
    wall_time_s: float = 0.0
    created_at: str = ""
    spp_version: str = field(default_factory=_spp_version)
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("task", "method", "backbone", "fingerprint"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ArtifactError(f"metadata field {name!r} must be a non-empty string, got {value!r}")
        for name in ("d_model", "n_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ArtifactError(f"metadata field {name!r} must be a positive integer, got {value!r}")

    def to_header(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if _is_plain_str(f) else json.dumps(value, sort_keys=True)
        return out

    @classmethod
    def from_header(cls, header: dict[str, str]) -> "ArtifactMeta":
        known = {f.name: f for f in dataclasses.fields(cls)}
        required = ("format_version", "task", "method", "backbone", "fingerprint", "d_model", "n_tokens")
        missing = [k for k in required if k not in header]
        if missing:
            raise ArtifactError(f"missing required metadata: {', '.join(missing)}")
        if header["format_version"] != FORMAT_VERSION:
            raise ArtifactError(f"unsupported artifact format_version {header['format_version']!r}")
        values: dict[str, Any] = {}
        for name, raw in header.items():
            if name not in known:
                continue  # newer writers may add fields; older readers ignore them
            if _is_plain_str(known[name]):
                values[name] = raw
            else:
                try:
                    values[name] = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ArtifactError(f"metadata field {name!r} is not valid JSON: {exc}") from None
        return cls(**values)

    @property
    def main_metric(self) -> float | None:
        """The main score: the mean of the test metrics, else of the validation metrics."""
        for split in ("test", "validation"):
            values = self.metrics.get(split)
            if values:
                return float(sum(values.values()) / len(values))
        return None


def _is_plain_str(f: dataclasses.Field) -> bool:
    return f.type in ("str", str)


@dataclass
class Artifact:
    prompt: torch.Tensor  # (n, e)
    meta: ArtifactMeta
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def validate(self) -> None:
        """Shape and value checks shared by save, load and registry publish."""
        p = self.prompt
        if p.ndim != 2:
            raise ArtifactError(f"prompt must be 2-D (n, e), got shape {tuple(p.shape)}")
        if tuple(p.shape) != (self.meta.n_tokens, self.meta.d_model):
            raise ArtifactError(
                f"prompt shape {tuple(p.shape)} does not match n_tokens x d_model "
                f"= ({self.meta.n_tokens}, {self.meta.d_model})"
            )
        if not torch.isfinite(p).all():
            raise ArtifactError("prompt contains NaN or infinite values")


_DTYPES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def artifact_bytes(artifact: Artifact) -> bytes:
    """Serialise to the safetensors format, byte-for-byte deterministic for the same content.

    safetensors' own writer orders metadata keys by hash, so the same artifact would get a new
    sha256 each save; the registry addresses content by hash, so the header is written here
    with sorted keys (the layout: u64 header size, JSON header padded to 8 bytes, raw data).
    """
    artifact.validate()
    tensors = {PROMPT_KEY: artifact.prompt.detach().float().cpu().contiguous()}
    for name, t in artifact.state.items():
        tensors[STATE_PREFIX + name] = t.detach().cpu().contiguous()
    header: dict[str, Any] = {"__metadata__": dict(sorted(artifact.meta.to_header().items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise ArtifactError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"".join(chunks)


def save_artifact(artifact: Artifact, path: str | os.PathLike[str]) -> Path:
    """Write the artifact atomically (see :func:`atomic_write`)."""
    return atomic_write(path, artifact_bytes(artifact))


def read_metadata(path: str | os.PathLike[str]) -> ArtifactMeta:
    """Parse only the header (cheap: no tensor data is read)."""
    with _open(path) as fh:
        return ArtifactMeta.from_header(fh.metadata() or {})


def load_artifact(path: str | os.PathLike[str], *, with_state: bool = True) -> Artifact:
    with _open(path) as fh:
        meta = ArtifactMeta.from_header(fh.metadata() or {})
        keys = set(fh.keys())
        if PROMPT_KEY not in keys:
            raise ArtifactError(f"{path}: no {PROMPT_KEY!r} tensor")
        prompt = fh.get_tensor(PROMPT_KEY)
        state = {}
        if with_state:
            state = {k[len(STATE_PREFIX):]: fh.get_tensor(k) for k in keys if k.startswith(STATE_PREFIX)}
    artifact = Artifact(prompt=prompt, meta=meta, state=state)
    artifact.validate()
    return artifact


def load_artifact_bytes(data: bytes, *, with_state: bool = True) -> Artifact:
    """Same as load_artifact for bytes already in memory (the registry reads and hashes first)."""
    from safetensors.torch import load as st_load

    try:
        header = _header_from_bytes(data)
        tensors = st_load(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"not a valid safetensors file: {exc}") from None
    meta = ArtifactMeta.from_header(header)
    if PROMPT_KEY not in tensors:
        raise ArtifactError(f"no {PROMPT_KEY!r} tensor")
    state = {}
    if with_state:
        state = {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    artifact = Artifact(prompt=tensors[PROMPT_KEY], meta=meta, state=state)
    artifact.validate()
    return artifact


def _header_from_bytes(data: bytes) -> dict[str, str]:
    return safetensors_header(data)[0].get("__metadata__", {}) or {}


class _open:
    """safe_open with errors turned into ArtifactError (not a file, not safetensors...)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __enter__(self):
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: no such file")
        try:
            self._cm = safe_open(str(self.path), framework="pt", device="cpu")
            return self._cm.__enter__()
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(f"{self.path}: not a valid safetensors file ({exc})") from None

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def metric_mean(values: dict[str, float]) -> float:
    """Mean of a metric dict (two-metric tasks report their mean); NaN for empty."""
    return float(sum(values.values()) / len(values)) if values else math.nan
