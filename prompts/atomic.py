"""Stdlib-only file helpers (crash-safe writes, safetensors header parsing) that the registry
imports without pulling in torch."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    before_rename: Callable[[], None] | None = None,
) -> Path:
    """Write ``data`` so that readers see the old file or the whole new one, never a torn one.

    Temp file (in ``tmp_dir``, default the target's folder: same filesystem), fsync, rename.
    ``before_rename`` runs between fsync and rename (the registry's crash tests hook there).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tmp_dir) if tmp_dir else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name[:24]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safetensors_header(data: bytes) -> tuple[dict, int]:
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
