"""Server fixtures: three tasks with different n_tokens and label sets in a fresh registry."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch

from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.tasks import TaskSpec

# name -> (n_tokens, template, label words): different n AND different label sets, so a
# batch mixing them exercises prompt padding and per-row candidate sets.
TASKS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "sentiment": (3, "{review}", ("negative", "positive")),
    "topic": (5, "topic? {review}", ("nature", "culture")),
    "pair": (8, "first: {a} second: {b}", ("same", "different", "unsure")),
}
INPUTS: dict[str, list[dict[str, str]]] = {
    "sentiment": [{"review": r} for r in ("great movie", "awful storm", "nice lake", "sad song today")],
    "topic": [{"review": r} for r in ("good film", "grim forest", "lovely poem", "dull hill")],
    "pair": [{"a": "happy tree", "b": "bright cloud"}, {"a": "poor show", "b": "weak album"},
             {"a": "fine river", "b": "ugly play"}],
}


def make_artifact(
    backbone, task: str, *, seed: int = 0, n_tokens: int | None = None, fingerprint: str | None = None,
    d_model: int | None = None, accuracy: float = 0.5,
) -> Artifact:
    """A prompt for one of TASKS built without training: a seeded random (n, e) tensor."""
    n_default, template, words = TASKS[task]
    n = n_tokens or n_default
    e = d_model or backbone.d_model
    gen = torch.Generator().manual_seed(seed)
    spec = TaskSpec(name=task, template=template, label_words=words)
    meta = ArtifactMeta(
        task=task, method="simple", backbone=backbone.name, fingerprint=fingerprint or backbone.fingerprint,
        d_model=e, n_tokens=n, task_spec=spec.to_dict(), metrics={"validation": {"accuracy": accuracy}},
        method_config={"n_tokens": n}, seed=seed,
    )
    return Artifact(prompt=torch.randn(n, e, generator=gen) * 0.5, meta=meta)


@dataclass
class World:
    """A registry with TASKS published (version 1 each, alias prod on it) and its artifacts."""

    root: Path
    registry: object
    artifacts: dict[str, Artifact]

    def publish(self, artifact: Artifact, **kwargs):
        version, _ = self.registry.publish(artifact, **kwargs)
        return version


@pytest.fixture
def world(spp_home: Path, tiny_backbone) -> World:
    from spp.registry import Registry

    registry = Registry(spp_home)
    artifacts = {}
    for i, task in enumerate(TASKS):
        artifacts[task] = make_artifact(tiny_backbone, task, seed=i)
        registry.publish(artifacts[task], aliases=["prod"])
    return World(spp_home, registry, artifacts)


@pytest.fixture
def make_settings(tiny_backbone_dir: Path, spp_home: Path) -> Callable:
    from spp.serve.settings import ServeSettings

    def make(**overrides) -> ServeSettings:
        # float32 pinned: answers are compared with the float32 tiny_backbone at tight tolerance;
        # shard threads: worker processes take seconds to start (tests/serve/test_shard_processes.py)
        values = dict(backbone=str(tiny_backbone_dir), registry=spp_home, device="cpu", dtype="float32", max_wait_ms=2.0,
                      shard_processes=False)
        values.update(overrides)
        return ServeSettings(**values)

    return make


@pytest.fixture
def client(world: World, make_settings):
    """A TestClient on a started app (lifespan run) over the three-task world."""
    from litestar.testing import TestClient

    from spp.serve.app import create_app

    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as c:
        yield c


def expected(backbone, artifact: Artifact, inputs: list[dict[str, str]]) -> tuple[list[str], list[dict[str, float]]]:
    """What `spp eval` computes for these inputs: score_texts with the artifact's prompt."""
    from spp.prompts.scoring import LabelSet, Scorer, score_texts

    spec = TaskSpec.from_dict(artifact.meta.task_spec)
    texts = [spec.format(x) for x in inputs]
    preds, probs = score_texts(Scorer(backbone), texts, artifact.prompt, LabelSet.build(backbone, spec.label_words))
    words = spec.label_words
    return [words[p] for p in preds], [dict(zip(words, pr)) for pr in probs]


def assert_matches(body: dict, labels: list[str], probs: list[dict[str, float]], tol: float = 1e-4) -> None:
    got = body["predictions"]
    assert [p["label"] for p in got] == labels
    for g, want in zip(got, probs):
        assert list(g["probabilities"]) == list(want)  # every label word, in label order
        for word, p in want.items():
            assert abs(g["probabilities"][word] - p) <= tol, (word, g["probabilities"][word], p)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers of this file for test modules (tests/ is not a package: no relative imports)."""
    return SimpleNamespace(TASKS=TASKS, INPUTS=INPUTS, make_artifact=make_artifact, expected=expected,
                           assert_matches=assert_matches, corrupt_blob=corrupt_blob, free_port=free_port)


def corrupt_blob(registry, ref: str) -> None:
    """Flip bytes in the middle of a stored blob (its sha256 no longer matches)."""
    path = Path(registry.blob_path(registry.resolve(ref)))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_uvicorn():
    """Start apps under a real uvicorn on 127.0.0.1 (a thread each); stopped at teardown.

    ``run_uvicorn(settings) -> (url, app, server, thread)``; the uvicorn config is the one
    `spp serve` uses (spp.serve.app.uvicorn_config: TLS included), with ``log_level`` and
    ``lifespan`` as given.
    """
    import uvicorn

    from spp.serve.app import create_app, uvicorn_config

    started: list = []

    def start(settings, *, scheme: str = "http"):
        app = create_app(settings)
        config = uvicorn_config(app, settings)
        config.lifespan = "on"
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
        thread.start()
        started.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return f"{scheme}://127.0.0.1:{settings.port}", app, server, thread

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=30)
