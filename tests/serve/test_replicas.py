"""Two `spp serve` replicas behind a real nginx (deploy/nginx.conf), sharing one registry whose
index is a real PostgreSQL server: alias moves reach both at once; an index outage keeps cached
exact versions answering (200) while everything else is 503 and /ready is false; the index
coming back is picked up without restarting anything."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from spp.registry import Registry

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
REVIEW = {"inputs": [{"review": "great movie"}]}
pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.2)


def _start_replica(backbone_dir: Path, registry: str, port: int, cache: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spp.cli.main", "serve", "--backbone", str(backbone_dir), "--registry", registry,
           "--port", str(port), "--device", "cpu", "--log-level", "warning",
           "--shard-threads"]  # worker processes: tests/serve/test_shard_processes.py (they add ~10 s per replica)
    env = dict(os.environ, SPP_BLOB_CACHE=str(cache))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _start_nginx(prefix: Path, replicas: list[int], port: int) -> subprocess.Popen:
    """The shipped config, with this test's ports in place of the example ones."""
    (prefix / "tmp").mkdir(parents=True)
    conf = CONF.read_text()
    for example, real in (("127.0.0.1:8001", replicas[0]), ("127.0.0.1:8002", replicas[1]), ("127.0.0.1:8080", port)):
        assert example in conf
        conf = conf.replace(example, f"127.0.0.1:{real}")
    (prefix / "nginx.conf").write_text(conf)
    cmd = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory):
    """An untrained tiny T5 (model + tokenizer on disk): this test checks routing, versions and
    outages, not prediction quality, so it skips the pretraining of the shared fixture."""
    from spp.prompts.backbone import load_backbone
    from spp.prompts.demo.toy import make_tiny_backbone_dir

    folder = make_tiny_backbone_dir(tmp_path_factory.mktemp("untrained-t5") / "model", steps=0)
    return folder, load_backbone(str(folder), device="cpu")


def _predict(base: str, ref: str) -> httpx.Response:
    return httpx.post(f"{base}/predict", params={"task": ref}, json=REVIEW, timeout=30)


def test_replicas_behind_nginx_share_one_postgres_registry(postgres, backbone, kit, tmp_path: Path) -> None:
    tiny_backbone_dir, tiny_backbone = backbone
    url = postgres.url(postgres.create_database(), store=f"file://{tmp_path / 'store'}")
    publisher = Registry(url, cache_dir=tmp_path / "publisher-cache")
    publisher.publish(kit.make_artifact(tiny_backbone, "sentiment", seed=1), aliases=["prod"])
    publisher.publish(kit.make_artifact(tiny_backbone, "sentiment", seed=2))
    publisher.publish(kit.make_artifact(tiny_backbone, "sentiment", seed=3))  # never requested before the outage
    ports = [_free_port(), _free_port()]
    lb_port = _free_port()
    procs = [_start_replica(tiny_backbone_dir, url, p, tmp_path / f"cache-{i}") for i, p in enumerate(ports)]
    procs.append(_start_nginx(tmp_path / "nginx", ports, lb_port))
    replicas = [f"http://127.0.0.1:{p}" for p in ports]
    lb = f"http://127.0.0.1:{lb_port}"
    try:
        for base, proc in zip(replicas + [lb], procs):
            _wait(f"{base}/ready", proc)
        for base in replicas:  # warm both caches with the exact version and the alias
            assert _predict(base, "sentiment@1").json()["prompt"] == "sentiment@1"
            assert _predict(base, "sentiment@prod").json()["prompt"] == "sentiment@1"
        assert (tmp_path / "cache-0" / "blobs").is_dir() and (tmp_path / "cache-1" / "blobs").is_dir()

        # The documented bound is zero staleness: once set_alias returns, the very first request
        # to each replica (directly and through nginx) already gets the new version.
        publisher.set_alias("sentiment@2", "prod")
        seen = [_predict(base, "sentiment@prod").json()["prompt"] for base in replicas + [lb] * 4]
        assert seen == ["sentiment@2"] * 6

        postgres.stop()
        try:
            for ref in ("sentiment@1", "sentiment@1", "sentiment@2", "sentiment@2"):  # round robin: each on both
                r = _predict(lb, ref)
                assert r.status_code == 200 and r.json()["prompt"] == ref
            for ref in ("sentiment@prod", "sentiment", "sentiment@3"):  # need the index, or never loaded
                r = _predict(lb, ref)
                assert r.status_code == 503, (ref, r.text)
                assert "unavailable" in r.json()["detail"]
            for base in replicas:
                ready = httpx.get(f"{base}/ready", timeout=10)
                assert ready.status_code == 503 and "registry unreachable" in ready.json()["detail"]
                assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        finally:
            postgres.start()
        for base, proc in zip(replicas, procs):
            _wait(f"{base}/ready", proc, timeout=30)
        assert [_predict(lb, "sentiment@prod").json()["prompt"] for _ in range(4)] == ["sentiment@2"] * 4
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT if proc is not procs[-1] else signal.SIGQUIT)
        for proc in procs:
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        publisher.close()
