"""`spp serve`: options reach the settings, bad values and startup failures are one line, and a
real server process answers and shuts down cleanly on SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.tasks import TaskSpec

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the server loop: record the settings instead of serving."""
    seen: list = []
    monkeypatch.delenv("SPP_API_KEYS", raising=False)  # keys come from the test, not the environment

    async def fake_run_server(settings) -> None:
        seen.append(settings)

    monkeypatch.setattr("spp.serve.app.run_server", fake_run_server)
    return seen


def test_options_reach_the_settings(captured, tmp_path: Path):
    result = runner.invoke(app, [
        "serve", "--backbone", "random:t5-small", "--registry", str(tmp_path), "--preload", "rte@prod,cb",
        "--host", "0.0.0.0", "--port", "9001", "--max-batch-size", "16", "--max-wait-ms", "2.5",
        "--max-queue", "256", "--device", "cpu", "--tokenizer", "some/tok", "--max-inputs", "8",
        "--max-input-chars", "100", "--cache-size", "3", "--no-micro-batches", "--revision", "v1.1",
        "--max-source-length", "128", "--shards", "3", "--shard-threads", "--no-pipeline",
    ])
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.backbone, s.registry, s.preload, s.host, s.port) == (
        "random:t5-small", str(tmp_path), ("rte@prod", "cb"), "0.0.0.0", 9001)
    assert (s.max_batch_size, s.max_wait_ms, s.max_queue, s.device, s.tokenizer) == (16, 2.5, 256, "cpu", "some/tok")
    assert (s.max_inputs, s.max_input_chars, s.cache_size, s.micro_batches) == (8, 100, 3, False)
    assert (s.revision, s.max_source_length, s.shards, s.shard_processes, s.pipeline) == ("v1.1", 128, 3, False, False)


def test_security_options_reach_the_settings(captured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    keys, cert, key = tmp_path / "keys", tmp_path / "cert.pem", tmp_path / "key.pem"
    keys.write_text("file-key-0123456789abcdef\n")
    cert.write_text("cert")
    key.write_text("key")
    monkeypatch.setenv("SPP_API_KEYS", "env-key-0123456789abcdef,env-key-2-0123456789abc")
    result = runner.invoke(app, [
        "serve", "--api-key-file", str(keys), "--public-metrics", "--ssl-certfile", str(cert), "--ssl-keyfile",
        str(key), "--allowed-host", "spp.example.org", "--allowed-host", "*.internal", "--body-timeout-s", "2.5",
    ])
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert s.api_keys == ("env-key-0123456789abcdef", "env-key-2-0123456789abc", "file-key-0123456789abcdef")
    assert (s.metrics_auth, s.ssl_certfile, s.ssl_keyfile, s.body_timeout_s) == (False, cert, key, 2.5)
    assert s.allowed_hosts == ("spp.example.org", "*.internal")


@pytest.mark.parametrize("args, message", [
    (["--api-key-file", "/nonexistent/keys"], "cannot read api_key_file"),
    (["--ssl-certfile", "/nonexistent/c.pem"], "ssl_certfile and ssl_keyfile go together"),
])
def test_bad_security_options_are_one_line(captured, args, message):
    result = runner.invoke(app, ["serve", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_defaults(captured):
    assert runner.invoke(app, ["serve"]).exit_code == 0
    s = captured[0]
    assert s.backbone == "google/t5-base-lm-adapt"  # the paper's, as `spp train`'s default
    assert s.micro_batches is None  # automatic: on for a CPU running padded forwards
    assert s.shards is None and s.compile is None  # automatic: 2 shards and compiled sublayers on a CPU
    assert s.shard_processes is None  # automatic: worker processes on a CPU with 2+ shards
    assert s.pipeline is None  # automatic: on with worker processes
    assert (s.registry, s.host, s.port, s.max_batch_size, s.max_wait_ms, s.max_queue, s.device, s.preload) == (
        None, "127.0.0.1", 8000, 64, 5.0, 1024, "auto", ())
    assert (s.api_keys, s.metrics_auth, s.ssl_certfile, s.allowed_hosts, s.body_timeout_s) == ((), True, None, (), 10.0)


@pytest.mark.parametrize("args, message", [
    (["--max-batch-size", "0"], "max_batch_size must be a positive integer"),
    (["--max-queue", "8"], "max_queue (8) must be at least max_batch_size (64)"),
    (["--port", "99999"], "port must be an integer in 0..65535"),
    (["--max-wait-ms", "-1"], "max_wait_ms must be a number"),
    (["--shards", "0"], "shards must be an integer in 1..256"),
])
def test_bad_values_exit_2_with_one_line(captured, args, message):
    result = runner.invoke(app, ["serve", "--backbone", "random:t5-small", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert captured == []


def test_startup_failures_are_one_line_errors(tiny_backbone_dir: Path, tmp_path: Path):
    (tmp_path / "r").mkdir()  # an existing, empty registry (a missing one is refused before any lookup)
    result = runner.invoke(app, ["serve", "--backbone", str(tiny_backbone_dir), "--registry", str(tmp_path / "r"),
                                 "--device", "cpu", "--preload", "nope", "--port", "1"])
    assert result.exit_code == 2, result.output
    assert "no prompt named 'nope'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["serve", "--backbone", str(tmp_path / "missing-model"), "--device", "cpu"])
    assert result.exit_code == 2 and "cannot load T5 backbone" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_process_answers_and_stops_cleanly_on_sigint(tiny_backbone, tiny_backbone_dir, tmp_path):
    from spp.registry import Registry

    spec = TaskSpec(name="sentiment", template="{review}", label_words=("negative", "positive"))
    meta = ArtifactMeta(task="sentiment", method="simple", backbone=tiny_backbone.name,
                        fingerprint=tiny_backbone.fingerprint, d_model=tiny_backbone.d_model, n_tokens=4,
                        task_spec=spec.to_dict())
    Registry(tmp_path / "reg").publish(Artifact(prompt=torch.randn(4, tiny_backbone.d_model), meta=meta),
                                       aliases=["prod"])
    port = _free_port()
    cmd = [sys.executable, "-m", "spp.cli.main", "serve", "--backbone", str(tiny_backbone_dir), "--registry",
           str(tmp_path / "reg"), "--port", str(port), "--device", "cpu", "--preload", "sentiment@prod"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        r = httpx.post(f"{url}/predict", params={"task": "sentiment@prod"}, json={"inputs": [{"review": "good film"}]})
        assert r.status_code == 200 and r.json()["prompt"] == "sentiment@1"
        assert r.json()["predictions"][0]["label"] in ("negative", "positive")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Application shutdown complete" in out and "Traceback" not in out
