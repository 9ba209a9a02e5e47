"""Content-addressed blob stores: one file per distinct artifact, named by its sha256.

:class:`BlobStore` is a local (or shared-filesystem) directory; :class:`FsspecBlobStore` is
any fsspec object store (s3://, gs://). Both have the same methods, so the registry and the
server's blob cache do not care which one they hold (:func:`open_store` picks by URL).

Layout under the registry root: ``blobs/<first two hex>/<sha256>.safetensors`` and ``tmp/``
for writes in flight. A blob is written to a temp file, fsynced, renamed into place (atomic on
POSIX and Windows) and its directory fsynced, so a reader or a crash never sees a torn blob:
either the whole file is there under its name, or nothing is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from spp.prompts.artifact.files import atomic_write, sha256_file, sha256_stream  # sha256_file: re-exported for callers
from spp.registry.errors import RegistryError
from spp.registry.location import STORE_EXTRAS

log = logging.getLogger(__name__)

BLOB_SUFFIX = ".safetensors"
# Test-only fault injection: when this variable names a point below, the process reports
# "spp-stalled:<point>" on stderr and sleeps there, so a test can SIGKILL it at that exact point.
STALL_ENV = "SPP_REGISTRY_TEST_STALL"
STALL_POINTS = ("blob-temp-written", "after-blob", "in-transaction")


def stall_point(point: str) -> None:
    """Test hook: block forever at ``point`` when $SPP_REGISTRY_TEST_STALL names it."""
    if os.environ.get(STALL_ENV) == point:
        sys.stderr.write(f"spp-stalled:{point}\n")
        sys.stderr.flush()
        while True:  # pragma: no cover - only ever ended by SIGKILL from a test
            time.sleep(3600)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; directories cannot be opened for fsync on Windows."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Blobs under ``root/blobs``; temp files under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"

    def path(self, sha: str) -> Path:
        return self.blob_dir / sha[:2] / f"{sha}{BLOB_SUFFIX}"

    def put(self, data: bytes, sha: str) -> Path:
        """Store ``data`` (whose sha256 is ``sha``) unless an intact copy is already there.

        An existing file that is not intact (a corrupt blob reported by verify) is replaced,
        so publishing the same artifact again repairs the store.
        """
        target = self.path(sha)
        if target.is_file() and target.stat().st_size == len(data) and sha256_file(target) == sha:
            return target
        atomic_write(target, data, tmp_dir=self.tmp_dir, before_rename=lambda: stall_point("blob-temp-written"))
        _fsync_dir(target.parent)
        return target

    def read(self, sha: str) -> bytes:
        """The blob's bytes; FileNotFoundError when it is missing (the caller names the ref)."""
        with open(self.path(sha), "rb") as fh:
            return fh.read()

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def where(self, sha: str) -> str:
        """How messages name the blob."""
        return str(self.path(sha))

    def size(self, sha: str) -> int | None:
        """The blob's size in bytes, None when it is missing."""
        try:
            return self.path(sha).stat().st_size
        except FileNotFoundError:
            return None

    def digest(self, sha: str) -> str:
        """The sha256 of the stored bytes (streamed)."""
        return sha256_file(self.path(sha))

    def remove(self, sha: str) -> Path | None:
        path = self.path(sha)
        try:
            path.unlink()
        except FileNotFoundError:
            return None
        return path

    # Small documents beside the blobs (the ledger: spp.registry.ledger), by relative key.
    def get_doc(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def put_doc(self, key: str, data: bytes) -> None:
        atomic_write(self.root / key, data, tmp_dir=self.tmp_dir)

    def list_docs(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """(sha256, path) of every file that looks like a blob."""
        if not self.blob_dir.is_dir():
            return
        for sub in sorted(self.blob_dir.iterdir()):
            if not sub.is_dir():
                continue
            for path in sorted(sub.iterdir()):
                if path.name.endswith(BLOB_SUFFIX):
                    yield path.name[: -len(BLOB_SUFFIX)], path

    def stale_temp_files(self, older_than_s: float) -> list[Path]:
        """Temp files left by crashed writers (a live writer's file is younger than the grace)."""
        if not self.tmp_dir.is_dir():
            return []
        cutoff = time.time() - older_than_s
        out = []
        for path in self.tmp_dir.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime <= cutoff:
                    out.append(path)
            except FileNotFoundError:  # finished (renamed) while we looked
                continue
        return out


class FsspecBlobStore:
    """Blobs in an fsspec object store under ``url`` (``s3://bucket/prefix``, ``gs://...``).

    Object stores make a PUT visible whole or not at all, so there are no temp files; a blob
    is still always written before the index row that names it.
    """

    def __init__(self, url: str, display: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.display = display
        protocol = self.url.split("://", 1)[0]
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url)
        except ImportError:
            extra = STORE_EXTRAS.get(protocol, protocol)
            raise RegistryError(f"blob store {display} needs its fsspec driver: pip install 'spp[{extra}]'") from None

    def _key(self, sha: str) -> str:
        return f"{self.base}/blobs/{sha[:2]}/{sha}{BLOB_SUFFIX}"

    def where(self, sha: str) -> str:
        return f"{self.url}/blobs/{sha[:2]}/{sha}{BLOB_SUFFIX}"

    def put(self, data: bytes, sha: str) -> str:
        if self.size(sha) == len(data) and self.digest(sha) == sha:
            return self.where(sha)
        self.fs.pipe_file(self._key(sha), data)
        return self.where(sha)

    def read(self, sha: str) -> bytes:
        return self.fs.cat_file(self._key(sha))

    def exists(self, sha: str) -> bool:
        return self.fs.exists(self._key(sha))

    def size(self, sha: str) -> int | None:
        try:
            return int(self.fs.size(self._key(sha)))
        except FileNotFoundError:
            return None

    def digest(self, sha: str) -> str:
        with self.fs.open(self._key(sha), "rb") as fh:
            return sha256_stream(fh)

    def remove(self, sha: str) -> str | None:
        try:
            self.fs.rm_file(self._key(sha))
        except FileNotFoundError:
            return None
        return self.where(sha)

    def get_doc(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(f"{self.base}/{key}")
        except FileNotFoundError:
            return None

    def put_doc(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.base}/{key}", data)

    def list_docs(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(f"{self.base}/{prefix}")
        except FileNotFoundError:
            return []
        start = len(self.fs._strip_protocol(self.base).rstrip("/")) + 1
        return sorted(self.fs._strip_protocol(k)[start:] for k in found)

    def iter_blobs(self) -> Iterator[tuple[str, str]]:
        self.fs.invalidate_cache()  # a listing cached before another host's writes would mislead gc
        try:
            found = self.fs.find(f"{self.base}/blobs")
        except FileNotFoundError:
            return
        for key in sorted(found):
            leaf = key.rsplit("/", 1)[-1]
            if leaf.endswith(BLOB_SUFFIX):
                yield leaf[: -len(BLOB_SUFFIX)], f"{self.fs.unstrip_protocol(key)}"

    def stale_temp_files(self, older_than_s: float) -> list[str]:
        return []  # object PUTs leave no temp files


def open_store(url: str, display: str) -> "BlobStore | FsspecBlobStore":
    """The blob store at a ``file://`` / ``s3://`` / ``gs://`` URL.

    ``file://`` uses :class:`BlobStore` directly (temp file, fsync, atomic rename): fsspec's
    local writes are not atomic, and a shared filesystem is exactly where torn files hurt.
    """
    from urllib.parse import unquote, urlsplit

    if url.lower().startswith("file://"):
        return BlobStore(Path(unquote(urlsplit(url).path)))
    return FsspecBlobStore(url, display)
