"""The one artifact codec: bytes <-> :class:`Artifact`, with exactly one canonical byte form.

Layout (the safetensors format): u64 little-endian header length, a JSON header padded with
spaces to a multiple of 8 bytes, then the raw tensor data. Tensors: ``prompt`` (n, e) float32,
plus optional ``state.<name>`` tensors (the method's own parameters, for resuming or transfer
initialisation). Metadata lives in the header's ``__metadata__`` as strings (JSON where
structured; see :mod:`spp.prompts.artifact.meta`).

Canonical form: the header JSON with sorted keys, no whitespace, UTF-8 (not ASCII-escaped);
tensor data in sorted-name order. :func:`encode` is the only function that writes a header, so
the trainer, the PEFT importer and the registry produce the same bytes for the same content,
and a published file's registry sha256 is its own ``sha256sum``. safetensors' own writer
orders metadata by hash (a new sha256 on every save), hence this writer.

This module imports torch only inside the functions that build or read tensors, so the
registry can canonicalise and hash files without it. Reading never unpickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spp.prompts.artifact.files import MAX_ARTIFACT_BYTES, FileReadError, atomic_write, open_regular, read_bounded
from spp.prompts.artifact.meta import ArtifactError, ArtifactMeta

if TYPE_CHECKING:
    import torch

PROMPT_KEY = "prompt"
STATE_PREFIX = "state."
METADATA_KEY = "__metadata__"
_ALIGN = 8
_DTYPE_CODES = ("F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


def safetensors_header(data: bytes) -> tuple[dict[str, Any], int]:
    """(JSON header, offset where tensor data starts) of safetensors bytes; ValueError if malformed."""
    if len(data) < 8:
        raise ValueError("too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("bad safetensors header length")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return header, 8 + n


def encode(header: dict[str, Any], payload: bytes) -> bytes:
    """THE header writer: canonical JSON (sorted keys, compact, UTF-8), space-padded to 8 bytes."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % _ALIGN)
    return len(text).to_bytes(8, "little") + text + payload


def canonical_bytes(data: bytes) -> bytes:
    """``data`` (any safetensors file) with its header re-written by :func:`encode`.

    Tensor bytes are kept as they are, so a file that is already canonical comes back
    unchanged (byte for byte) and registries written by earlier spp versions, whose blobs are
    in this form, keep their addresses. ValueError when ``data`` has no safetensors header.
    """
    header, start = safetensors_header(data)
    return encode(header, data[start:])


@dataclass
class Artifact:
    prompt: "torch.Tensor"  # (n, e)
    meta: ArtifactMeta
    state: "dict[str, torch.Tensor]" = field(default_factory=dict)

    def validate(self) -> None:
        """Shape and value checks shared by save, load and registry publish."""
        import torch

        p = self.prompt
        if p.ndim != 2:
            raise ArtifactError(f"prompt must be 2-D (n, e), got shape {tuple(p.shape)}")
        if tuple(p.shape) != (self.meta.n_tokens, self.meta.d_model):
            raise ArtifactError(
                f"prompt shape {tuple(p.shape)} does not match n_tokens x d_model "
                f"= ({self.meta.n_tokens}, {self.meta.d_model})"
            )
        if not p.is_floating_point():
            raise ArtifactError(f"prompt must be a floating-point tensor, got {p.dtype}")
        if not torch.isfinite(p).all():
            raise ArtifactError("prompt contains NaN or infinite values")


def artifact_bytes(artifact: Artifact) -> bytes:
    """The artifact in canonical form: deterministic bytes for the same content."""
    import torch

    codes = dict(zip((torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                      torch.int16, torch.int8, torch.uint8, torch.bool), _DTYPE_CODES))
    artifact.validate()
    tensors = {PROMPT_KEY: artifact.prompt.detach().float().cpu().contiguous()}
    for name, t in artifact.state.items():
        tensors[STATE_PREFIX + name] = t.detach().cpu().contiguous()
    header: dict[str, Any] = {METADATA_KEY: artifact.meta.to_header()}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in codes:
            raise ArtifactError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    return encode(header, b"".join(chunks))


def save_artifact(artifact: Artifact, path: str | os.PathLike[str]) -> Path:
    """Write the artifact's canonical bytes atomically (see :func:`atomic_write`)."""
    return atomic_write(path, artifact_bytes(artifact))


def decode(data: bytes, *, with_state: bool = True) -> Artifact:
    """Parse and validate artifact bytes (any safetensors layout; nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        header = safetensors_header(data)[0].get(METADATA_KEY) or {}
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"not a valid safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError("the safetensors __metadata__ is not a JSON object")
    meta = ArtifactMeta.from_header(header)
    if PROMPT_KEY not in tensors:
        raise ArtifactError(f"no {PROMPT_KEY!r} tensor")
    state = {}
    if with_state:
        state = {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    artifact = Artifact(prompt=tensors[PROMPT_KEY], meta=meta, state=state)
    artifact.validate()
    return artifact


def load_artifact(path: str | os.PathLike[str], *, with_state: bool = True) -> Artifact:
    """Read and validate an artifact file."""
    return _with_path(path, lambda data: decode(data, with_state=with_state))


def read_metadata(path: str | os.PathLike[str]) -> ArtifactMeta:
    """Parse only the header (no tensor data is read)."""

    def parse(head: bytes) -> ArtifactMeta:
        try:
            header = safetensors_header(head)[0].get(METADATA_KEY) or {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"not a valid safetensors file: {exc}") from None
        return ArtifactMeta.from_header(header)

    return _with_path(path, parse, header_only=True)


def _with_path(path: str | os.PathLike[str], parse: Any, *, header_only: bool = False) -> Any:
    path = Path(path)
    try:
        if header_only:  # the header alone: at most 8 + its length bytes, never the tensors
            with open_regular(path) as fh:
                size = int.from_bytes(fh.read(8), "little")
                fh.seek(0)
                data = fh.read(8 + min(size, MAX_ARTIFACT_BYTES))
        else:
            data = read_bounded(path)
    except OSError as exc:
        raise ArtifactError(f"cannot read {_reason(path, exc)}") from None
    try:
        return parse(data)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def _reason(path: Path, exc: OSError) -> str:
    return str(exc) if isinstance(exc, FileReadError) else f"{path}: {exc.strerror or exc}"
