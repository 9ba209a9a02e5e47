"""A real uvicorn server on 127.0.0.1 and a free port, concurrent httpx clients, clean shutdown."""

from __future__ import annotations

import asyncio

import httpx
import pytest


@pytest.fixture
def live_server(world, make_settings, run_uvicorn, kit):
    return run_uvicorn(make_settings(port=kit.free_port(), max_wait_ms=200, max_batch_size=32, log_level="warning"))


def test_concurrent_clients_over_three_tasks_get_correct_answers(live_server, world, tiny_backbone, kit):
    url, app, server, thread = live_server
    want = {t: kit.expected(tiny_backbone, world.artifacts[t], kit.INPUTS[t]) for t in kit.TASKS}
    rounds = 6

    async def one_client(task: str, client: httpx.AsyncClient) -> list[httpx.Response]:
        out = []
        for i in range(rounds):  # closed loop: the next request after the answer
            ref = f"{task}@prod" if i % 2 else task
            out.append(await client.post(f"{url}/predict", params={"task": ref}, json={"inputs": kit.INPUTS[task]}))
        return out

    async def run_all():
        async with httpx.AsyncClient(timeout=60) as client:
            assert (await client.get(f"{url}/ready")).status_code == 200
            jobs = [one_client(t, client) for t in kit.TASKS for _ in range(4)]  # 12 concurrent clients
            results = await asyncio.gather(*jobs)
            metrics = (await client.get(f"{url}/metrics")).text
            return results, metrics

    results, metrics = asyncio.run(run_all())
    for task, responses in zip([t for t in kit.TASKS for _ in range(4)], results):
        for r in responses:
            assert r.status_code == 200, r.text
            assert r.json()["prompt"] == f"{task}@1"
            kit.assert_matches(r.json(), *want[task])
    for task in kit.TASKS:
        assert f'spp_requests_total{{task="{task}",status="200"}} {4 * rounds}' in metrics
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("spp_batch_prompts_"))
    assert float(samples["spp_batch_prompts_sum"]) > float(samples["spp_batch_prompts_count"])  # tasks were mixed

    server.should_exit = True  # clean shutdown: thread ends, batcher stopped, port released
    thread.join(timeout=30)
    assert not thread.is_alive()
    service = app.state.spp
    assert not service.batcher.running and service.batcher.pending == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
