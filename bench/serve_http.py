"""The HTTP side of bench/serve.py: `spp serve` in a subprocess, and closed-loop clients."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

MIN_MEASURED = 2  # answers per HTTP client at least, whatever --duration says
SPP = [sys.executable, "-m", "spp.cli.main"]  # this checkout's CLI


class Server:
    """`spp serve` in a subprocess on a free loopback port."""

    def __init__(self, args: argparse.Namespace, registry: Path, log: Path, dtype: str | None = None,
                 extra: list[str] | None = None, spp: list[str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*(spp or SPP), "serve", "--backbone", args.backbone, "--registry", str(registry),
               "--port", str(self.port), "--device", args.device, "--max-queue", str(max(1024, 4 * args.clients)),
               "--preload", ",".join(f"task{i}" for i in range(args.tasks)),
               "--log-level", "debug" if args.server_log else "warning"]
        if args.tokenizer:
            cmd += ["--tokenizer", args.tokenizer]
        if dtype:
            cmd += ["--dtype", dtype]
        cmd += extra or []
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready in time")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def batch_counters(self) -> tuple[float, float]:
        """(sum of rows, number of batches) from /metrics."""
        values = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(("spp_batch_size_sum", "spp_batch_size_count")):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values.get("spp_batch_size_sum", 0.0), values.get("spp_batch_size_count", 0.0)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=120)
        self.log.close()
        return code


def publish_with(spp: list[str], artifacts: list[Path], registry: Path) -> None:
    """Publish ``artifacts`` as task0, task1, ... with another install's own CLI (its registry
    layout may differ from this checkout's), so that its server can load them."""
    for i, path in enumerate(artifacts):
        done = subprocess.run([*spp, "publish", str(path), "--name", f"task{i}", "--registry", str(registry)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(spp)} publish failed: {(done.stderr or done.stdout).strip()[-500:]}")


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a load generator that costs the
    2-core machine little CPU. httpx, used before, spent ~16% of a core at 25 requests/s on the
    cores the server scores on; real clients run on other machines."""

    def __init__(self, url: str) -> None:
        host_port = url.removeprefix("http://")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, target: str, payload: object) -> tuple[int, bytes]:
        """POST ``payload`` as JSON to ``target`` (path and query); returns (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        head = (f"POST {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("the server answered without Content-Length (not supported by this client)")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def closed_loop(url: str, clients: int, warmup: float, duration: float, tasks: list[str],
                      inputs: list[dict[str, str]], seed: int) -> dict:
    """``clients`` loops, each sending its next request as soon as the previous one answers.

    Each client is busy without pause from its first measured send (at or after the warmup)
    to its last answer, so its rate is exactly count / span; the total is the sum of the
    clients' rates. Answers arrive in bursts (one per batch), which would make a fixed-window
    count depend on where the window cuts a burst; this estimate does not. Each client keeps
    going past the window until it has MIN_MEASURED answers, so a loaded machine whose batch
    cycle is longer than the window still gets a measurement (it just takes longer).
    """
    rng = random.Random(seed)
    t_start = time.perf_counter() + warmup
    t_end = t_start + duration
    rates: list[float] = []
    latencies: list[float] = []
    errors: list[int] = []

    async def client() -> None:
        first, last, count = None, None, 0
        conn = Connection(url)
        while time.perf_counter() < t_end or count < MIN_MEASURED:  # a slow machine runs longer
            task, example = rng.choice(tasks), rng.choice(inputs)
            t0 = time.perf_counter()
            status, _ = await conn.post_json(f"/predict?task={task}", {"inputs": [example]})
            t1 = time.perf_counter()
            if status != 200:
                errors.append(status)
            elif t0 >= t_start:
                first = t0 if first is None else first
                last, count = t1, count + 1
                latencies.append(t1 - t0)
        await conn.close()
        if count:
            rates.append(count / (last - first))

    await asyncio.gather(*(client() for _ in range(clients)))
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, statuses {sorted(set(errors))}")
    return {"rate": sum(rates), "requests": len(latencies), "latencies": latencies}


def http_scenario(server: Server, args, tasks: list[str], inputs, seconds: float, seed: int) -> dict:
    before = server.batch_counters()
    result = asyncio.run(closed_loop(server.url, args.clients, args.warmup, seconds, tasks, inputs, seed))
    after = server.batch_counters()
    result["rows"], result["batches"] = after[0] - before[0], after[1] - before[1]
    return result


