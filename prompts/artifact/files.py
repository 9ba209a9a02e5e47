"""Crash-safe file writes and bounded reads (stdlib only), shared by artifact saving and loading,
the registry's blob store, and everything that imports files from elsewhere (publish, pull,
PEFT import)."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

# The largest artifact spp reads. Artifacts, pulled repos and PEFT adapters come from other
# people, so nothing reads more than this: a prompt is n x d_model floats (10 x 1024 x 4 bytes
# = 40 KB for T5-large) and a SuperPos state adds n x d_model x m (5 MB at m = 128), so 256 MiB
# leaves room for any real prompt while `spp publish /dev/zero` or a 100 GB file fails at once.
MAX_ARTIFACT_BYTES = 256 << 20
# Side files (model cards, adapter_config.json, spp_artifact.json) are small text.
MAX_SIDE_FILE_BYTES = 4 << 20


class FileReadError(OSError):
    """A file that :func:`read_bounded` refuses: missing, not a regular file, or too large.

    An OSError so that callers that already turn OSError into a one-line message keep doing so;
    ``str()`` is that one line (path and reason).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot read file"


@contextmanager
def open_regular(path: str | os.PathLike[str], *, limit: int = MAX_ARTIFACT_BYTES) -> Iterator[BinaryIO]:
    """Open ``path`` for reading if it is a regular file of at most ``limit`` bytes.

    Refused (FileReadError) before anything is read: a missing path, a directory, a device
    (``/dev/zero``), a FIFO or socket (opened non-blocking, so a FIFO without a writer cannot
    hang us), and a file larger than ``limit``. The checks are on the opened descriptor, so a
    path swapped after the check cannot slip through.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileReadError(f"{path}: no such file") from None
    except OSError as exc:
        raise FileReadError(f"{path}: cannot open ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileReadError(f"{path}: a directory")
        if not stat.S_ISREG(info.st_mode):
            raise FileReadError(f"{path}: not a regular file")
        raise FileReadError(f"{path}: {info.st_size} bytes, more than the maximum of {limit} bytes")
    with os.fdopen(fd, "rb") as fh:
        yield fh


def read_bounded(path: str | os.PathLike[str], *, limit: int = MAX_ARTIFACT_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`); never more than
    ``limit + 1`` bytes are read, so a file growing while it is read is refused too."""
    with open_regular(path, limit=limit) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise FileReadError(f"{path}: more than the maximum of {limit} bytes")
    return data


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 (hex): a content address for blobs and data files."""
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def sha256_stream(fh: BinaryIO) -> str:
    """The sha256 (hex) of what is left in a binary file object (local or fsspec), read in 1 MiB blocks."""
    h = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


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
