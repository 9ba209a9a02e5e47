"""Shards in worker processes: the scores of one forward, errors raised as raised, a killed
worker replaced, nothing left running after close. Real spawned processes throughout."""

from __future__ import annotations

import os
import threading
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from spp.prompts import processes
from spp.prompts.backbone import load_backbone
from spp.prompts.processes import ProcessShardedScore, WorkerDied, decode_tensor, encode_tensor, wanted
from spp.prompts.scoring import LabelSet, Scorer

TEXTS = ["hello world", "a much longer sentence that goes on and on", "x", "two words", "the third row",
         "short", "a medium length line of text"]
LABEL_SETS = [("yes", "no"), ("entailment", "neutral", "contradiction"), ("a", "bb", "ccc", "dddd")]


@pytest.fixture(scope="module")
def backbone(tiny_backbone_dir):
    return load_backbone(str(tiny_backbone_dir), device="cpu", dtype="float32")  # its own: weights go to shared memory


@pytest.fixture(scope="module")
def workers(backbone):
    sharded = ProcessShardedScore(backbone, 2, 1)
    yield sharded
    sharded.close()


def _batch(backbone, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randn(int(torch.randint(1, 7, (1,), generator=g)), backbone.d_model, generator=g) for _ in TEXTS]
    sets = [LabelSet.build(backbone, LABEL_SETS[i % 3]) for i in range(len(TEXTS))]
    return prompts, sets


def _pids(sharded: ProcessShardedScore) -> list[int]:
    return [w.process.pid for w in sharded._workers if w is not None]


def test_workers_score_like_one_forward_in_this_process(backbone, workers):
    prompts, sets = _batch(backbone)
    whole = Scorer(backbone).score(TEXTS, prompts, sets)
    got = workers(TEXTS, prompts, sets)
    assert got.sizes == whole.sizes == [len(s.words) for s in sets]
    assert torch.equal(torch.isinf(got.loglik), torch.isinf(whole.loglik))
    finite = torch.isfinite(whole.loglik)
    torch.testing.assert_close(got.loglik[finite], whole.loglik[finite], atol=1e-5, rtol=1e-5)
    # one prompt and one label set for every row, and a single row (one worker only)
    one = workers(TEXTS[:1], prompts[0], sets[0])
    torch.testing.assert_close(one.loglik, Scorer(backbone).score(TEXTS[:1], prompts[0], sets[0]).loglik)
    assert all(pid != os.getpid() for pid in _pids(workers)) and len(set(_pids(workers))) == 2


def test_an_error_in_a_worker_is_raised_here_and_the_worker_serves_on(backbone, workers):
    prompts, sets = _batch(backbone)
    bad = [torch.zeros(3, backbone.d_model + 1)] * len(TEXTS)  # a prompt of the wrong width
    with pytest.raises(RuntimeError) as here:
        Scorer(backbone).score(TEXTS, bad, sets)
    before = _pids(workers)
    with pytest.raises(type(here.value)) as there:
        workers(TEXTS, bad, sets)
    assert str(there.value) == str(here.value)
    assert _pids(workers) == before  # the same processes, still serving
    assert workers(TEXTS, prompts, sets).sizes == [len(s.words) for s in sets]


def test_a_dead_worker_is_replaced_before_its_next_shard(backbone, workers):
    prompts, sets = _batch(backbone, seed=1)
    expected = workers(TEXTS, prompts, sets).loglik
    victim = workers._workers[0]
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.join(10)
    again = workers(TEXTS, prompts, sets)  # a new worker in its place, the same scores
    torch.testing.assert_close(again.loglik, expected)
    assert victim.process.pid not in _pids(workers) and len(_pids(workers)) == 2


def test_a_worker_dying_with_a_shard_fails_that_shard_and_the_next_call_is_answered(backbone, workers):
    prompts, sets = _batch(backbone, seed=2)
    expected = workers(TEXTS, prompts, sets).loglik
    victim = workers._workers[1]
    os.kill(victim.process.pid, signal.SIGKILL)  # dies between the liveness check and its answer
    victim.process.join(10)
    with pytest.raises(WorkerDied, match="exited|gone"):
        victim.score(processes._job(TEXTS, prompts, sets, [0, 1]))
    torch.testing.assert_close(workers(TEXTS, prompts, sets).loglik, expected)


def test_calls_from_several_threads_at_once_get_their_own_answers(backbone, workers):
    batches = [_batch(backbone, seed=s) for s in range(4)]
    want = [Scorer(backbone).score(TEXTS, p, l).loglik for p, l in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda b: workers(TEXTS, *b).loglik, batches * 2))
    for g, w in zip(got, want * 2):
        finite = torch.isfinite(w)
        torch.testing.assert_close(g[finite], w[finite], atol=1e-5, rtol=1e-5)


def test_whole_batches_go_to_idle_workers_one_each(backbone, workers):
    """``whole``: the batch unsplit on one idle worker; two callers at once get one worker each."""
    batches = [_batch(backbone, seed=s) for s in range(4)]
    want = [Scorer(backbone).score(TEXTS, p, l).loglik for p, l in batches]
    first_two, lock, taken = threading.Barrier(2, timeout=20), threading.Lock(), []
    score = workers._score

    def spy(k, job):  # the first two calls meet here: both hold a worker at once
        with lock:
            taken.append(k)
            meet = len(taken) <= 2
        if meet:
            first_two.wait()
        assert len(job[0]) == len(TEXTS)  # the whole batch, not a shard of it
        return score(k, job)

    workers._score = spy
    try:
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda b: workers.whole(TEXTS, *b).loglik, batches * 2))
    finally:
        del workers._score
    for g, w in zip(got, want * 2):
        finite = torch.isfinite(w)
        torch.testing.assert_close(g[finite], w[finite], atol=1e-5, rtol=1e-5)
    assert sorted(taken[:2]) == [0, 1] and len(taken) == 8  # at once: different workers


def test_an_exception_that_cannot_cross_the_pipe_arrives_as_runtime_error():
    class Local(ValueError):  # a class defined in a function does not pickle
        pass

    plain = ValueError("bad input")
    assert processes._portable(plain) is plain
    portable = processes._portable(Local("bad input"))
    assert type(portable) is RuntimeError and str(portable) == "Local: bad input"


def test_workers_outlive_a_group_sigterm_and_keep_answering(backbone, workers):
    prompts, sets = _batch(backbone, seed=3)
    before = _pids(workers)
    for pid in before:  # what a service manager's stop sends to every process of the group
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)  # SIGTERM's default action would have ended them by now
    assert all(w.process.is_alive() for w in workers._workers if w is not None)
    assert workers(TEXTS, prompts, sets).sizes == [len(s.words) for s in sets]
    assert _pids(workers) == before


def test_close_stops_every_worker(backbone):
    sharded = ProcessShardedScore(backbone, 2, 1)
    procs = [w.process for w in sharded._workers if w is not None]
    assert all(p.is_alive() for p in procs)
    sharded.close()
    assert not any(p.is_alive() for p in procs)


def test_a_worker_that_cannot_start_fails_the_start_with_its_reason(backbone, monkeypatch):
    with pytest.raises(RuntimeError, match="a scoring worker failed to start: "):
        ProcessShardedScore(backbone, 1, 1, max_source_length="many")  # type: ignore[arg-type]


@pytest.mark.parametrize(("choice", "device", "shards", "want"), [
    (None, "cpu", 2, True), (None, "cpu", 1, False), (None, "cuda", 2, False), (None, "meta", 3, False),
    (True, "cpu", 1, True), (False, "cpu", 2, False), (True, "cuda", 1, True),
])
def test_processes_are_wanted_on_a_cpu_with_several_shards_unless_chosen(choice, device, shards, want):
    assert wanted(choice, torch.device(device), shards) is want


@pytest.mark.parametrize("tensor", [torch.randn(3, 5), torch.randn(2, 4).bfloat16(), torch.zeros(0, 7),
                                    torch.tensor([[float("-inf"), 1.5]])], ids=["f32", "bf16", "empty", "inf"])
def test_tensors_cross_the_pipe_as_plain_bytes_unchanged(tensor):
    dtype, shape, data = encode_tensor(tensor)
    assert isinstance(data, bytes) and shape == tuple(tensor.shape)
    back = decode_tensor((dtype, shape, data))
    assert back.dtype == tensor.dtype and torch.equal(back, tensor)
