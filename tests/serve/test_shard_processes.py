"""The server with its shards in worker processes (the default on a CPU with 2+ shards): the
answers of `spp eval`, a killed worker replaced without a failed request, none left behind."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from litestar.testing import TestClient

from spp.serve.app import create_app


@pytest.fixture
def proc_client(world, make_settings):
    # shards=2: processes are the default only with 2+ shards (a 1-core machine plans one)
    with TestClient(create_app(make_settings(shard_processes=None, shards=2)), raise_server_exceptions=False) as c:
        yield c


def _workers(client):
    return [w.process for w in client.app.state.spp._sharded._workers if w is not None]


def test_health_says_processes_and_answers_match_spp_eval(proc_client, world, tiny_backbone, kit):
    health = proc_client.get("/health").json()
    assert (health["shard_processes"], health["shards"], health["threads"]) == (True, 2, 1)
    assert health["compiled"] is True  # each worker compiled its forwards before /ready
    assert all(p.is_alive() and p.pid != os.getpid() for p in _workers(proc_client))
    for task in kit.TASKS:  # rows of every task in flight at once: mixed batches across both workers
        inputs = kit.INPUTS[task] * 2
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda _: proc_client.post(f"/predict?task={task}", json={"inputs": inputs}),
                                    range(3)))
        for r in replies:
            assert r.status_code == 200, r.text
            kit.assert_matches(r.json(), *kit.expected(tiny_backbone, world.artifacts[task], inputs))


def test_a_killed_worker_is_replaced_and_no_request_fails(proc_client, world, tiny_backbone, kit):
    inputs = kit.INPUTS["topic"] * 2
    victim = _workers(proc_client)[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    r = proc_client.post("/predict?task=topic", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    kit.assert_matches(r.json(), *kit.expected(tiny_backbone, world.artifacts["topic"], inputs))
    assert victim.pid not in [p.pid for p in _workers(proc_client)] and len(_workers(proc_client)) == 2


def test_stopping_the_server_stops_its_workers(world, make_settings):
    with TestClient(create_app(make_settings(shard_processes=True, shards=2))) as c:
        procs = _workers(c)
        assert len(procs) == 2 and c.get("/health").json()["shard_processes"] is True
    assert not any(p.is_alive() for p in procs)


def test_shard_threads_when_asked(world, make_settings):
    with TestClient(create_app(make_settings(shard_processes=False, shards=2))) as c:
        assert c.get("/health").json()["shard_processes"] is False
        assert not hasattr(c.app.state.spp._sharded, "_workers")
