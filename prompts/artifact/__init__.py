"""The prompt artifact: one ``.safetensors`` file, one codec, one metadata schema.

Public API:
- :class:`Artifact` (prompt, meta, state), :class:`ArtifactMeta`, :class:`ArtifactError`
- :func:`save_artifact`, :func:`load_artifact`, :func:`read_metadata`
- :func:`artifact_bytes` / :func:`decode` (bytes in memory), :func:`canonical_bytes`
- :class:`IndexedMeta` (the fields the registry indexes), :func:`spp_version`

Importing this package does not import torch (the registry lists and hashes without it).
"""

from spp.prompts.artifact.codec import (
    PROMPT_KEY,
    STATE_PREFIX,
    Artifact,
    artifact_bytes,
    canonical_bytes,
    decode,
    load_artifact,
    read_metadata,
    safetensors_header,
    save_artifact,
)
from spp.prompts.artifact.files import atomic_write
from spp.prompts.artifact.meta import (
    FORMAT_VERSION,
    ArtifactError,
    ArtifactMeta,
    IndexedMeta,
    indexed_fields,
    spp_version,
)

__all__ = [
    "FORMAT_VERSION", "PROMPT_KEY", "STATE_PREFIX", "Artifact", "ArtifactError", "ArtifactMeta", "IndexedMeta",
    "artifact_bytes", "atomic_write", "canonical_bytes", "decode", "indexed_fields", "load_artifact",
    "read_metadata", "safetensors_header", "save_artifact", "spp_version",
]
