"""Crash-safe file writes (stdlib only), shared by artifact saving and the registry's blob store."""

from __future__ import annotations

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
