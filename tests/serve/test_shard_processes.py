"""The server with its shards in worker processes (the default on a CPU with 2+ shards): the
answers of `spp eval`, a killed worker replaced without a failed request, none left behind.
One server start for all of it: each start spawns two interpreters that import torch."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

from litestar.testing import TestClient

from spp.serve.app import create_app


def _workers(client):
    return [w.process for w in client.app.state.spp._sharded._workers if w is not None]


def _answers_match(client, world, backbone, kit, task: str, copies: int = 3) -> None:
    inputs = kit.INPUTS[task] * 2
    with ThreadPoolExecutor(copies) as pool:  # rows in flight at once: batches across both workers
        replies = list(pool.map(lambda _: client.post(f"/predict?task={task}", json={"inputs": inputs}),
                                range(copies)))
    for r in replies:
        assert r.status_code == 200, r.text
        kit.assert_matches(r.json(), *kit.expected(backbone, world.artifacts[task], inputs))


def test_worker_processes_answer_like_spp_eval_survive_a_kill_and_stop_with_the_server(
        world, make_settings, tiny_backbone, kit):
    # shards=2: processes are the default only with 2+ shards (a 1-core machine plans one)
    settings = make_settings(shard_processes=None, shards=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        health = c.get("/health").json()
        assert (health["shard_processes"], health["shards"], health["threads"]) == (True, 2, 1)
        assert health["pipeline"] is True  # whole batches, one per worker, two in flight
        assert health["compiled"] is True  # each worker compiled its forwards before /ready
        procs = _workers(c)
        assert len(procs) == 2 and all(p.is_alive() and p.pid != os.getpid() for p in procs)
        for task in kit.TASKS:
            _answers_match(c, world, tiny_backbone, kit, task)

        victim = procs[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        _answers_match(c, world, tiny_backbone, kit, "topic", copies=1)  # replaced before its next shard
        procs = _workers(c)
        assert victim.pid not in [p.pid for p in procs] and len(procs) == 2
    assert not any(p.is_alive() for p in procs)  # the server's stop stopped them
