"""The batcher on its own: batch forming, mixed-task parity, failure isolation, back-pressure."""

from __future__ import annotations

import asyncio

import pytest
import torch

from spp.prompts.scoring import LabelSet, Scorer, Scores
from spp.prompts.tasks import TaskSpec
from spp.serve.batcher import Batcher
from spp.serve.errors import QueueFullError, ScoringError, ServerBusyError
from spp.serve.tuning import MicroBatchTuner

LABELS_2 = LabelSet(("no", "yes"), ((1,), (2,)))
LABELS_3 = LabelSet(("a", "b", "c"), ((1,), (2,), (3,)))


class FakeScorer:
    """Prediction = len(text) % number of labels; records every call's rows and prompts."""

    def __init__(self, fail_on: str | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self.fail_on = fail_on
        self.delay = delay

    def __call__(self, texts, prompts, label_sets) -> Scores:
        import time

        time.sleep(self.delay)
        self.calls.append((list(texts), len({id(p) for p in prompts})))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot score {self.fail_on!r}")
        sizes = [len(ls.words) for ls in label_sets]
        loglik = torch.full((len(texts), max(sizes)), float("-inf"))
        for i, (t, k) in enumerate(zip(texts, sizes)):
            loglik[i, :k] = -5.0
            loglik[i, len(t) % k] = 0.0
        return Scores(loglik=loglik, sizes=sizes)


def run(coro):
    return asyncio.run(coro)


async def _with_batcher(score_fn, body, **kwargs):
    batcher = Batcher(score_fn, **kwargs)
    await batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


def test_requests_of_different_tasks_share_one_batch_and_get_their_own_answers():
    fake = FakeScorer()
    p1, p2 = torch.zeros(2, 4), torch.zeros(5, 4)

    async def body(b: Batcher):
        return await asyncio.gather(
            b.submit(["xx", "xxx"], p1, LABELS_2), b.submit(["x", "xxxx", "xxxxx"], p2, LABELS_3)
        )

    r1, r2 = run(_with_batcher(fake, body, max_batch_size=5, max_wait_ms=10_000))
    assert len(fake.calls) == 1 and fake.calls[0] == (["xx", "xxx", "x", "xxxx", "xxxxx"], 2)
    assert r1.preds == [0, 1] and r2.preds == [1, 1, 2]
    assert len(r1.probs[0]) == 2 and len(r2.probs[0]) == 3
    assert r2.probs[2][2] == pytest.approx(1 / (1 + 2 * torch.exp(torch.tensor(-5.0)).item()))


def test_max_wait_sends_a_partial_batch():
    fake = FakeScorer()

    async def body(b: Batcher):
        return await asyncio.wait_for(b.submit(["ab"], torch.zeros(1, 4), LABELS_2), timeout=5)

    result = run(_with_batcher(fake, body, max_batch_size=64, max_wait_ms=20))
    assert result.preds == [0] and [len(t) for t, _ in fake.calls] == [1]


def test_a_large_request_is_split_across_batches_and_reassembled_in_order():
    fake = FakeScorer()
    texts = ["x" * (i % 3 + 1) for i in range(10)]

    async def body(b: Batcher):
        return await b.submit(texts, torch.zeros(1, 4), LABELS_3)

    result = run(_with_batcher(fake, body, max_batch_size=4, max_wait_ms=0))
    assert [len(t) for t, _ in fake.calls] == [4, 4, 2]
    assert result.preds == [len(t) % 3 for t in texts]


def test_a_failing_row_fails_only_its_own_request():
    fake = FakeScorer(fail_on="poison")

    async def body(b: Batcher):
        return await asyncio.gather(
            b.submit(["ok", "fine"], torch.zeros(1, 4), LABELS_2),
            b.submit(["poison"], torch.zeros(2, 4), LABELS_2),
            b.submit(["good"], torch.zeros(3, 4), LABELS_3),
            return_exceptions=True,
        )

    ok, bad, good = run(_with_batcher(fake, body, max_batch_size=4, max_wait_ms=10_000))
    assert ok.preds == [0, 0] and good.preds == [1]
    assert isinstance(bad, ScoringError) and not bad.transient and "poison" in str(bad)
    # one mixed attempt, then each request alone
    assert [len(t) for t, _ in fake.calls] == [4, 2, 1, 1]


def test_the_worker_survives_a_failure_and_keeps_serving():
    fake = FakeScorer(fail_on="poison")

    async def body(b: Batcher):
        with pytest.raises(ScoringError):
            await b.submit(["poison"], torch.zeros(1, 4), LABELS_2)
        return await b.submit(["abc"], torch.zeros(1, 4), LABELS_2)

    assert run(_with_batcher(fake, body, max_batch_size=8, max_wait_ms=1)).preds == [1]


def test_a_full_queue_refuses_with_retry_after_and_queues_nothing():
    fake = FakeScorer()

    async def body(b: Batcher):
        first = asyncio.ensure_future(b.submit(["a"] * 6, torch.zeros(1, 4), LABELS_2))
        await asyncio.sleep(0.05)  # queued, waiting for the batch to fill
        with pytest.raises(QueueFullError) as info:
            await b.submit(["b"] * 3, torch.zeros(1, 4), LABELS_2)
        assert info.value.retry_after_s == 7 and b.pending == 6
        second = await b.submit(["c"] * 2, torch.zeros(1, 4), LABELS_2)  # fits: 8 rows
        return await first, second

    first, second = run(_with_batcher(fake, body, max_batch_size=8, max_wait_ms=10_000, max_queue=8, retry_after_s=7))
    assert len(first.preds) == 6 and len(second.preds) == 2 and fake.calls[0][0] == ["a"] * 6 + ["c"] * 2


def test_cancelled_requests_are_skipped():
    fake = FakeScorer()

    async def body(b: Batcher):
        doomed = asyncio.ensure_future(b.submit(["gone"], torch.zeros(1, 4), LABELS_2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        return await b.submit(["kept"], torch.zeros(1, 4), LABELS_2)

    assert run(_with_batcher(fake, body, max_batch_size=64, max_wait_ms=50)).preds == [0]
    assert [t for t, _ in fake.calls] == [["kept"]]


def test_submit_before_start_or_after_close_is_refused():
    async def body():
        b = Batcher(FakeScorer())
        with pytest.raises(ServerBusyError):
            await b.submit(["x"], torch.zeros(1, 4), LABELS_2)
        await b.start()
        waiting = asyncio.ensure_future(b.submit(["x"], torch.zeros(1, 4), LABELS_2))
        await asyncio.sleep(0)
        await b.close()
        with pytest.raises(ServerBusyError):
            await waiting
        with pytest.raises(ServerBusyError):
            await b.submit(["x"], torch.zeros(1, 4), LABELS_2)

    run(body())


def test_forced_mixed_batch_of_three_tasks_matches_score_texts(tiny_backbone, kit):
    """One forward over three tasks (n = 3, 5, 8; 2, 2 and 3 labels) == each task scored alone."""
    scorer = Scorer(tiny_backbone)
    calls: list[tuple[int, int]] = []

    def spy(texts, prompts, label_sets):
        calls.append((len(texts), len({p.shape[0] for p in prompts})))
        return scorer.score(texts, prompts, label_sets)

    arts = {t: kit.make_artifact(tiny_backbone, t, seed=i) for i, t in enumerate(kit.TASKS)}
    total = sum(len(v) for v in kit.INPUTS.values())

    async def body(b: Batcher):
        jobs = []
        for task, art in arts.items():
            spec = TaskSpec.from_dict(art.meta.task_spec)
            labels = LabelSet.build(tiny_backbone, spec.label_words)
            jobs.append(b.submit([spec.format(x) for x in kit.INPUTS[task]], art.prompt, labels))
        return await asyncio.gather(*jobs)

    results = run(_with_batcher(spy, body, max_batch_size=total, max_wait_ms=60_000))
    assert calls == [(total, 3)]  # one batch, three prompt lengths
    for (task, art), result in zip(arts.items(), results):
        labels, probs = kit.expected(tiny_backbone, art, kit.INPUTS[task])
        words = TaskSpec.from_dict(art.meta.task_spec).label_words
        assert [words[p] for p in result.preds] == labels
        for got, want in zip(result.probs, probs):
            assert got == pytest.approx(list(want.values()), abs=1e-4)



def test_a_batch_stays_open_while_requests_keep_arriving_and_closes_on_a_pause():
    fake = FakeScorer()

    async def body(b: Batcher):
        async def later(delay: float, text: str):
            await asyncio.sleep(delay)
            return await b.submit([text], torch.zeros(1, 4), LABELS_2)

        # 10 arrivals 50 ms apart (450 ms in all, more than max_wait, less than its cap) ...
        stream = [later(0.05 * i, f"s{i}") for i in range(10)]
        # ... then one after a pause longer than max_wait: a batch of its own.
        return await asyncio.gather(*stream, later(0.45 + 0.9, "alone"))

    run(_with_batcher(fake, body, max_batch_size=64, max_wait_ms=300))
    assert [sorted(t) for t, _ in fake.calls] == [sorted(f"s{i}" for i in range(10)), ["alone"]]


def test_the_wait_is_capped_even_if_requests_keep_coming():
    fake = FakeScorer()

    async def body(b: Batcher):
        async def later(delay: float):
            await asyncio.sleep(delay)
            return await b.submit(["x"], torch.zeros(1, 4), LABELS_2)

        return await asyncio.gather(*(later(0.02 * i) for i in range(40)))  # 800 ms of arrivals

    run(_with_batcher(fake, body, max_batch_size=64, max_wait_ms=30))  # cap: 300 ms
    assert len(fake.calls) >= 2 and sum(len(t) for t, _ in fake.calls) == 40


class FixedTuner(MicroBatchTuner):
    """Always ``size`` rows per forward; records what it was told."""

    def __init__(self, size):
        super().__init__()
        self.size, self.records = size, []

    def choose(self, rows):
        return self.size

    def record(self, size, rows, seconds):
        self.records.append((size, rows))


def test_micro_batches_are_length_sorted_mix_tasks_and_keep_the_answer_order():
    fake, tuner = FakeScorer(), FixedTuner(3)
    texts = ["x" * n for n in (7, 1, 5, 3, 6, 2, 4)]

    async def body(b: Batcher):
        return await asyncio.gather(b.submit(texts[:4], torch.zeros(1, 4), LABELS_3),
                                    b.submit(texts[4:], torch.zeros(2, 4), LABELS_2))

    r1, r2 = run(_with_batcher(fake, body, max_batch_size=7, max_wait_ms=10_000, tuner=tuner))
    assert [[len(t) for t in call] for call, _ in fake.calls] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [n for _, n in fake.calls] == [2, 2, 1]  # micro-batches still mix the two prompts
    assert r1.preds == [len(t) % 3 for t in texts[:4]] and r2.preds == [len(t) % 2 for t in texts[4:]]
    assert tuner.records == [(3, 7)]


class GatedScorer(FakeScorer):
    """Holds every call until released; records how many calls ran at once."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate, self.lock, self.running, self.most = threading.Event(), threading.Lock(), 0, 0

    def __call__(self, texts, prompts, label_sets) -> Scores:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.gate.wait(timeout=10)
            return super().__call__(texts, prompts, label_sets)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_concurrency_keeps_that_many_batches_in_flight_each_with_its_share_of_the_queue(concurrency):
    gated = GatedScorer()
    texts = [f"r{'x' * i}" for i in range(12)]

    async def body(b: Batcher):
        asked = [asyncio.ensure_future(b.submit([t], torch.zeros(1, 4), LABELS_2)) for t in texts]
        await asyncio.sleep(0.3)  # every batch that can start has started, and waits on the gate
        gated.gate.set()
        return await asyncio.gather(*asked)

    results = run(_with_batcher(gated, body, max_batch_size=64, max_wait_ms=20, concurrency=concurrency))
    assert [r.preds for r in results] == [[len(t) % 2] for t in texts]
    assert gated.most == concurrency
    # the 12 queued rows spread over the free threads: 12, or 6 + 6, or 4 + 4 + 4
    assert sorted(len(t) for t, _ in gated.calls) == [12 // concurrency] * concurrency


def test_a_tuner_is_refused_with_concurrency():
    with pytest.raises(ValueError, match="concurrency"):
        Batcher(FakeScorer(), tuner=MicroBatchTuner(), concurrency=2)
