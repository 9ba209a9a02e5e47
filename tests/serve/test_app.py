"""The HTTP app through Litestar's test clients: parity with `spp eval`, alias moves, errors."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from litestar.testing import TestClient

from spp.prompts.parallel import plan
from spp.registry import NotFoundError
from spp.serve.app import create_app

TEST_THREADS = torch.get_num_threads()  # what tests/conftest.py set: the count a server starts from


def _post(client, task: str, body):
    return client.post(f"/predict?task={task}", json=body)


# ----------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("task", ["sentiment", "topic", "pair"])
def test_predict_matches_spp_eval(client, world, tiny_backbone, kit, task):
    labels, probs = kit.expected(tiny_backbone, world.artifacts[task], kit.INPUTS[task])
    r = _post(client, task, {"inputs": kit.INPUTS[task]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt"] == f"{task}@1" and body["task"] == task and body["version"] == 1
    kit.assert_matches(body, labels, probs)


def test_texts_and_inputs_give_the_same_answer(client, world, kit):
    spec_template = kit.TASKS["pair"][1]
    texts = [spec_template.format(**x) for x in kit.INPUTS["pair"]]
    by_inputs = _post(client, "pair@prod", {"inputs": kit.INPUTS["pair"]}).json()
    by_texts = _post(client, "pair@1", {"texts": texts}).json()
    assert by_inputs["predictions"] == by_texts["predictions"]


def test_a_forced_mixed_batch_of_three_tasks_matches_spp_eval(world, make_settings, tiny_backbone, kit):
    """Three concurrent requests, one per task (n = 3, 5, 8; 2/2/3 labels), scored in ONE batch."""
    total = sum(len(v) for v in kit.INPUTS.values())
    app = create_app(make_settings(max_batch_size=total, max_wait_ms=30_000))
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:  # the portal runs them concurrently
        calls = [pool.submit(client.post, f"/predict?task={t}", json={"inputs": kit.INPUTS[t]}) for t in kit.TASKS]
        responses = [c.result(timeout=60) for c in calls]
    for task, r in zip(kit.TASKS, responses):
        assert r.status_code == 200, r.text
        kit.assert_matches(r.json(), *kit.expected(tiny_backbone, world.artifacts[task], kit.INPUTS[task]))
    metrics = app.state.spp.metrics
    assert metrics.batch_size.totals[()] == 1 and metrics.batch_size.sums[()] == total
    assert metrics.batch_prompts.sums[()] == 3


# ------------------------------------------------------------------------------ alias moves
def test_moving_an_alias_is_picked_up_by_the_next_request(client, world, tiny_backbone, kit):
    first = _post(client, "sentiment@prod", {"inputs": kit.INPUTS["sentiment"]}).json()
    assert first["prompt"] == "sentiment@1"
    new = kit.make_artifact(tiny_backbone, "sentiment", seed=99, n_tokens=6)
    v2 = world.publish(new)
    assert v2.version == 2
    assert _post(client, "sentiment@prod", {"inputs": kit.INPUTS["sentiment"]}).json()["prompt"] == "sentiment@1"
    world.registry.set_alias("sentiment@2", "prod")
    moved = _post(client, "sentiment@prod", {"inputs": kit.INPUTS["sentiment"]}).json()
    assert moved["prompt"] == "sentiment@2"
    kit.assert_matches(moved, *kit.expected(tiny_backbone, new, kit.INPUTS["sentiment"]))
    assert _post(client, "sentiment", {"texts": ["x"]}).json()["prompt"] == "sentiment@2"  # latest
    assert _post(client, "sentiment@1", {"texts": ["x"]}).json()["prompt"] == "sentiment@1"


# ----------------------------------------------------------------------------- bad requests
TOO_LONG = "w" * 5000


@pytest.mark.parametrize(
    "query, content, status, code",
    [
        ("task=nope", b'{"texts": ["x"]}', 404, "unknown_task"),
        ("task=sentiment@7", b'{"texts": ["x"]}', 404, "unknown_task"),
        ("task=sentiment@staging", b'{"texts": ["x"]}', 404, "unknown_task"),
        ("task=a@b@c", b'{"texts": ["x"]}', 422, "invalid_request"),
        ("", b'{"texts": ["x"]}', 422, "invalid_request"),
        ("task=sentiment", b'{"texts": ["x"', 422, "invalid_request"),
        ("task=sentiment", b"", 422, "invalid_request"),
        ("task=sentiment", b"[1, 2]", 422, "invalid_request"),
        ("task=sentiment", b'{"texts": [1]}', 422, "invalid_request"),
        ("task=sentiment", b'{"texts": "x"}', 422, "invalid_request"),
        ("task=sentiment", b'{"inputs": [["x"]]}', 422, "invalid_request"),
        ("task=sentiment", b'{"inputs": [{"review": ["x"]}]}', 422, "invalid_request"),
        ("task=sentiment", b'{"text": ["x"]}', 422, "invalid_request"),
        ("task=sentiment", b"{}", 422, "invalid_request"),
        ("task=sentiment", b'{"texts": ["x"], "inputs": [{"review": "x"}]}', 422, "invalid_request"),
        ("task=sentiment", b'{"texts": []}', 422, "invalid_request"),
        ("task=sentiment", b'{"inputs": [{"comment": "x"}]}', 422, "missing_field"),
        ("task=pair", b'{"inputs": [{"a": "x", "b": "y"}, {"a": "x"}]}', 422, "missing_field"),
        ("task=sentiment", b'{"inputs": [{"review": null}]}', 422, "missing_field"),
        ("task=sentiment", b'{"texts": [' + b'"x",' * 64 + b'"x"]}', 413, "too_large"),
        ("task=sentiment", b'{"texts": ["' + TOO_LONG.encode() + b'"]}', 413, "too_large"),
        ("task=sentiment", b'{"inputs": [{"review": "' + TOO_LONG.encode() + b'"}]}', 413, "too_large"),
    ],
)
def test_bad_requests_get_a_clear_status_and_a_json_error(client, query, content, status, code):
    r = client.post(f"/predict?{query}", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["status"] == status and body["detail"]
    assert "\n" not in body["detail"]
    if status == 404:
        assert body["known"] == ["pair", "sentiment", "topic"]
        assert ("pair" if "nope" in query else "versions: 1" if "@7" in query else "staging") in body["detail"]


def test_missing_field_error_names_the_field_and_the_input(client):
    r = client.post("/predict?task=pair", json={"inputs": [{"a": "x", "b": "y"}, {"a": "x"}]})
    assert "inputs[1]" in r.json()["detail"] and "missing field(s) b" in r.json()["detail"]


def test_a_body_larger_than_the_limit_gets_413(world, make_settings):
    settings = make_settings(max_inputs=2, max_input_chars=10)  # body limit: 1 MiB floor
    with TestClient(create_app(settings)) as c:
        r = c.post("/predict?task=sentiment", content=b'{"texts": ["' + b"x" * (2 << 20) + b'"]}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413


def test_numbers_and_booleans_are_accepted_as_field_values(client):
    r = client.post("/predict?task=pair", json={"inputs": [{"a": 3, "b": True}]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_a_full_queue_answers_503_with_retry_after(world, make_settings):
    settings = make_settings(max_batch_size=4, max_queue=4, max_inputs=4, max_wait_ms=30_000, retry_after_s=3)
    app = create_app(settings)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict?task=topic", json={"texts": ["a", "b", "c"]})
        while app.state.spp.batcher.pending < 3:  # the first request waits for its batch to fill
            time.sleep(0.01)
        refused = client.post("/predict?task=topic", json={"texts": ["d", "e"]})
        filler = client.post("/predict?task=sentiment", json={"texts": ["f"]})
        first = first.result(timeout=60)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert refused.json()["error"] == "unavailable" and "queue is full" in refused.json()["detail"]
    assert first.status_code == 200 and filler.status_code == 200
    assert len(first.json()["predictions"]) == 3


# ------------------------------------------------------------------------- broken prompts
def test_a_corrupt_prompt_fails_only_its_own_task(client, world, kit):
    kit.corrupt_blob(world.registry, "topic")
    r = _post(client, "topic", {"inputs": kit.INPUTS["topic"]})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "prompt_unavailable" and "topic@1" in r.json()["detail"]
    assert "sha256" in r.json()["detail"]
    for task in ("sentiment", "pair"):
        assert _post(client, task, {"inputs": kit.INPUTS[task]}).status_code == 200
    assert client.get("/tasks").status_code == 200
    assert 'spp_requests_total{task="topic",status="409"} 1' in client.get("/metrics").text


@pytest.mark.parametrize("bad", ["fingerprint", "d_model"])
def test_a_prompt_from_another_backbone_fails_only_its_own_task(client, world, tiny_backbone, kit, bad):
    alien = (kit.make_artifact(tiny_backbone, "topic", fingerprint="sha256:" + "0" * 64) if bad == "fingerprint"
             else kit.make_artifact(tiny_backbone, "topic", d_model=32))
    world.publish(alien, name="alien")
    r = _post(client, "alien", {"inputs": kit.INPUTS["topic"]})
    assert r.status_code == 409 and r.json()["error"] == "prompt_unavailable"
    assert ("different backbone" if bad == "fingerprint" else "d_model 32") in r.json()["detail"]
    assert _post(client, "topic", {"inputs": kit.INPUTS["topic"]}).status_code == 200
    listed = {t["name"]: t for t in client.get("/tasks").json()["tasks"]}
    assert listed["alien"]["versions"][0]["servable"] is False
    assert listed["topic"]["versions"][0]["servable"] is True


# ------------------------------------------------------------------------ other endpoints
def test_tasks_lists_versions_aliases_metrics_fields_and_labels(client, world, tiny_backbone, kit):
    world.publish(kit.make_artifact(tiny_backbone, "pair", seed=5, accuracy=0.75))
    body = client.get("/tasks").json()
    assert body["fingerprint"] == tiny_backbone.fingerprint
    tasks = {t["name"]: t for t in body["tasks"]}
    assert sorted(tasks) == ["pair", "sentiment", "topic"]
    pair = tasks["pair"]
    assert pair["latest"] == 2 and pair["aliases"] == {"prod": 1}
    assert pair["fields"] == ["a", "b"] and pair["label_words"] == ["same", "different", "unsure"]
    assert [v["version"] for v in pair["versions"]] == [1, 2]
    assert pair["versions"][1]["metrics"] == {"validation": {"accuracy": 0.75}}
    assert pair["versions"][1]["main_metric"] == 0.75 and pair["versions"][0]["n_tokens"] == 8


def test_health_ready_metrics_and_openapi(client, kit):
    shards, threads = plan(None, torch.device("cpu"), TEST_THREADS)  # 2 and 1 on a 2-core machine
    assert client.get("/health").json() == {"status": "ok", "dtype": "float32", "dtype_reason": "--dtype float32",
                                           "compiled": True, "packed": True,  # defaults: both, on a CPU
                                           "shards": shards, "threads": threads, "shard_processes": False,
                                           "pipeline": False}
    assert client.app.state.spp.batcher.tuner is None  # unpadded forwards: one forward per batch
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["device"] == "cpu"
    _post(client, "sentiment", {"inputs": kit.INPUTS["sentiment"]})
    _post(client, "sentiment", {"inputs": kit.INPUTS["sentiment"][:1]})
    _post(client, "nope", {"texts": ["x"]})
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = m.text
    assert 'spp_requests_total{task="sentiment",status="200"} 2' in text
    assert 'spp_requests_total{task="_unknown",status="404"} 1' in text
    assert 'spp_request_latency_seconds_count{task="sentiment"} 2' in text
    assert "spp_batch_size_count 2" in text and "spp_batch_size_sum 5.0" in text
    assert "spp_queue_depth 0" in text
    assert "spp_prompt_cache_misses_total 1" in text and "spp_prompt_cache_hits_total 1" in text
    schema = client.get("/schema/openapi.json").json()
    assert {"/predict", "/tasks", "/health", "/ready", "/metrics"} <= set(schema["paths"])
    responses = schema["paths"]["/predict"]["post"]["responses"]
    assert {"200", "404", "409", "413", "422", "503"} <= set(responses)


@pytest.mark.parametrize("shards", [1, 3])  # 2, the default on a 2-core CPU: the other tests' server
def test_shards_split_the_cpu_threads(world, make_settings, kit, tiny_backbone, shards):
    """Each batch is scored as ``shards`` shards at once, on shard threads that split torch's CPU
    threads between them (and compile there: compiled kernels keep the builder's count)."""
    before = torch.get_num_threads()
    with TestClient(create_app(make_settings(shards=shards))) as c:
        health = c.get("/health").json()
        assert (health["shards"], health["threads"]) == (shards, max(1, before // shards))
        assert c.app.state.spp._sharded.run(torch.get_num_threads) == health["threads"]
        inputs = kit.INPUTS["topic"] * 3  # rows for every shard
        r = _post(c, "topic", {"inputs": inputs})
        assert r.status_code == 200
        kit.assert_matches(r.json(), *kit.expected(tiny_backbone, world.artifacts["topic"], inputs))
    assert torch.get_num_threads() == before


def test_ready_is_503_when_the_registry_is_unreachable(client, world):
    service = client.app.state.spp

    def broken():
        raise OSError("disk gone")

    service.registry.names = broken  # type: ignore[method-assign]
    r = client.get("/ready")
    assert r.status_code == 503 and "disk gone" in r.json()["detail"]


def test_a_failing_registry_answers_503_not_500(client, world):
    import sqlite3

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    client.app.state.spp.registry.resolve = locked  # type: ignore[method-assign]
    client.app.state.spp.registry.names = locked  # type: ignore[method-assign]
    for r in (client.post("/predict?task=topic", json={"texts": ["x"]}), client.get("/tasks")):
        assert r.status_code == 503 and "database is locked" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"


def test_preload_fills_the_cache_and_a_bad_preload_fails_startup(world, make_settings):
    app = create_app(make_settings(preload=("topic@prod", "pair")))
    with TestClient(app) as c:
        assert c.get("/ready").json()["prompts_cached"] == 2
    with pytest.raises(BaseException) as info:
        with TestClient(create_app(make_settings(preload="nope"))):
            pass
    exc = info.value
    while isinstance(exc, BaseExceptionGroup):  # the test portal wraps startup errors
        exc = exc.exceptions[0]
    assert isinstance(exc, NotFoundError) and "nope" in str(exc)


def test_a_server_whose_compile_fails_serves_eagerly(world, make_settings, kit, tiny_backbone, monkeypatch):
    """--compile where torch.compile cannot work: the server still starts, answers exactly as the
    eager scorer does, and /health says it is not compiled."""
    from litestar.testing import TestClient

    from spp.serve.app import create_app

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("inductor: no working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with TestClient(create_app(make_settings(compile=True)), raise_server_exceptions=False) as c:
        health = c.get("/health").json()
        assert health["compiled"] is False and health["packed"] is True  # eager unpadded forwards
        assert c.app.state.spp.batcher.tuner is None
        r = _post(c, "topic", {"inputs": kit.INPUTS["topic"]})
        assert r.status_code == 200
        kit.assert_matches(r.json(), *kit.expected(tiny_backbone, world.artifacts["topic"], kit.INPUTS["topic"]))


def test_padded_forwards_get_tuned_micro_batches_and_no_default_compile(world, make_settings, kit, tiny_backbone,
                                                                        monkeypatch):
    """A backbone the unpadded forwards do not cover runs transformers' padded ones: the batcher
    tunes length-sorted micro-batches, and the default does not compile them (tens of seconds)."""
    from litestar.testing import TestClient

    from spp.prompts import packed
    from spp.serve.app import create_app

    monkeypatch.setattr(packed, "supports", lambda model: False)
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as c:
        health = c.get("/health").json()
        assert health["packed"] is False and health["compiled"] is False
        assert c.app.state.spp.batcher.tuner is not None
        r = _post(c, "topic", {"inputs": kit.INPUTS["topic"]})
        assert r.status_code == 200
        kit.assert_matches(r.json(), *kit.expected(tiny_backbone, world.artifacts["topic"], kit.INPUTS["topic"]))
