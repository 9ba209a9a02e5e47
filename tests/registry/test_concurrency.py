"""Many processes publishing at once, and publishes killed with SIGKILL at their worst moments,
on both backends: a directory (SQLite) and a shared registry (PostgreSQL + file:// store)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spp.registry import Registry
from spp.registry.store import STALL_ENV

PROCESSES = 8
PER_PROCESS = 10


@pytest.fixture(params=["directory", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A registry location string that child processes open for themselves."""
    monkeypatch.setenv("SPP_BLOB_CACHE", str(tmp_path / "cache"))
    if request.param == "postgres":
        return request.getfixturevalue("pg_registry_url")
    return str(tmp_path / "registry")


def _publish_all(root: str, paths: list[str], shared: str, start, results) -> None:
    """Child process: publish ``paths`` (and the shared file midway) once every child is ready."""
    reg = Registry(root)
    reg.list()  # open the index before the start line
    start.wait()
    out = []
    for i, path in enumerate(paths):
        version, created = reg.publish(path)
        out.append((version.ref, created))
        if i == PER_PROCESS // 2:  # everyone also publishes the same content once
            version, created = reg.publish(shared)
            out.append((version.ref, created, "shared"))
    results.put(out)


def test_concurrent_publishers_get_distinct_versions(location: str, artifact_file) -> None:
    paths = [[str(artifact_file("rte", seed=p * 100 + i)) for i in range(PER_PROCESS)] for p in range(PROCESSES)]
    shared = str(artifact_file("rte", seed=99_999))
    root = location
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_publish_all, args=(str(root), ps, shared, barrier, queue)) for ps in paths]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    reg = Registry(root)
    versions = reg.list()
    assert len(versions) == PROCESSES * PER_PROCESS + 1
    assert sorted(v.version for v in versions) == list(range(1, PROCESSES * PER_PROCESS + 2))
    assert len({v.sha256 for v in versions}) == len(versions)
    created = [row[0] for batch in results for row in batch if row[1]]
    assert len(created) == len(set(created)) == len(versions)  # no version handed out twice
    shared = [row for batch in results for row in batch if len(row) == 3]
    assert len(shared) == PROCESSES and len({row[0] for row in shared}) == 1  # identical content: one version
    assert sum(row[1] for row in shared) == 1  # created by exactly one process
    assert reg.verify() == [] and reg.gc() == []


_CHILD = """
import sys
from spp.registry import Registry
Registry(sys.argv[1]).publish(sys.argv[2])
"""


def _publish_and_kill(root: str, path: Path, point: str) -> None:
    """Run a publish that stalls at ``point``, then SIGKILL it there."""
    env = dict(os.environ, **{STALL_ENV: point})
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(path)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # blocks until the child reports it reached the point
        assert line.strip() == f"spp-stalled:{point}", line
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("point", ["blob-temp-written", "after-blob", "in-transaction"])
def test_publish_killed_midway_leaves_registry_consistent(location: str, artifact_file, point: str) -> None:
    root = location
    reg = Registry(root)
    before, _ = reg.publish(artifact_file("rte", seed=1))
    killed_file = artifact_file("rte", seed=2)
    _publish_and_kill(root, killed_file, point)

    reg = Registry(root)  # a fresh handle, as the next process would open it
    assert [v.ref for v in reg.list()] == [before.ref]  # the killed publish left no version
    assert reg.verify() == []
    nxt, created = reg.publish(artifact_file("rte", seed=3))
    assert created and nxt.ref == "rte@2"  # the write lock was released; numbering continues
    retried, created = reg.publish(killed_file)
    assert created and retried.ref == "rte@3" and reg.load(retried)[0] == retried
    assert reg.verify() == []
    assert all(Path(p).suffix == ".tmp" for p in reg.gc(temp_grace_s=0))  # at most the dead writer's temp file
    assert not any(reg.store.tmp_dir.iterdir()) and reg.verify() == []


def test_orphan_blob_from_a_killed_publish_is_collected(location: str, artifact_file) -> None:
    root = location
    path = artifact_file("rte", seed=5)
    _publish_and_kill(root, path, "after-blob")
    reg = Registry(root)
    assert reg.list() == []
    orphans = reg.gc()
    assert len(orphans) == 1 and not Path(orphans[0]).exists()
    assert reg.publish(path)[0].ref == "rte@1" and reg.verify() == []
