"""A real uvicorn server on 127.0.0.1 and a free port, concurrent httpx clients, clean shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from spp.serve.app import create_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(world, make_settings):
    port = _free_port()
    app = create_app(make_settings(port=port, max_wait_ms=200, max_batch_size=32))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app, server, thread
    server.should_exit = True
    thread.join(timeout=30)


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
