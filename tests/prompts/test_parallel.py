"""Sharded scoring: the same scores as one forward, from threads at once; failures surface whole."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from spp.prompts.parallel import ShardedScore, balance, merge, plan
from spp.prompts.scoring import LabelSet, Scorer, Scores

LABEL_SETS = [("yes", "no"), ("entailment", "neutral", "contradiction"), ("a", "bb", "ccc", "dddd")]
TEXTS = ["hello world", "a much longer sentence that goes on and on", "x", "two words", "the third row",
         "short", "a medium length line of text"]


def _batch(backbone, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    e = backbone.d_model
    prompts = [torch.randn(int(torch.randint(1, 7, (1,), generator=g)), e, generator=g) for _ in TEXTS]
    sets = [LabelSet.build(backbone, LABEL_SETS[i % 3]) for i in range(len(TEXTS))]
    return prompts, sets


@pytest.mark.parametrize("shards", [1, 2, 3, 16])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
def test_shards_score_like_one_forward(tiny_backbone, shards: int, packed: bool) -> None:
    scorer = Scorer(tiny_backbone, packed=packed)
    prompts, sets = _batch(tiny_backbone)
    sharded = ShardedScore(scorer.score, shards)
    try:
        whole = scorer.score(TEXTS, prompts, sets)
        got = sharded(TEXTS, prompts, sets)
    finally:
        sharded.close()
    assert got.sizes == whole.sizes == [len(s.words) for s in sets]
    assert got.loglik.shape == whole.loglik.shape
    assert torch.equal(torch.isinf(got.loglik), torch.isinf(whole.loglik))  # -inf exactly where a row has no candidate
    finite = torch.isfinite(whole.loglik)
    assert torch.allclose(got.loglik[finite], whole.loglik[finite], atol=1e-4)
    assert got.preds == whole.preds


def test_one_prompt_and_label_set_for_all_rows(tiny_backbone) -> None:
    scorer = Scorer(tiny_backbone)
    prompt = torch.randn(3, tiny_backbone.d_model)
    labels = LabelSet.build(tiny_backbone, LABEL_SETS[1])
    sharded = ShardedScore(scorer.score, 2)
    try:
        got = sharded(TEXTS, prompt, labels)
    finally:
        sharded.close()
    assert torch.allclose(got.loglik, scorer.score(TEXTS, prompt, labels).loglik, atol=1e-4)


def test_threads_tokenize_with_copies_lent_by_the_backbone(tiny_backbone) -> None:
    """A Rust tokenizer shared by threads can fail a call that overlaps another one changing its
    truncation or padding ("Already borrowed", transformers issue 47085): the scorer's own thread
    uses the backbone's tokenizer; threads at once each borrow a distinct copy, and copies are
    lent again to later threads and other scorers of the backbone, not made anew."""
    import dataclasses

    backbone = dataclasses.replace(tiny_backbone)  # a pool of its own, counted from zero
    scorer = Scorer(backbone)
    with scorer._tokenizer() as tok:
        assert tok is backbone.tokenizer and backbone.tokenizers.copies == 0
    both = threading.Barrier(2)
    seen = []

    def borrow(scorer: Scorer) -> None:
        with scorer._tokenizer() as tok:
            seen.append(tok)
            both.wait(timeout=10)  # both threads hold their copy at the same time

    def run_pair(scorer: Scorer) -> None:
        threads = [threading.Thread(target=borrow, args=(scorer,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run_pair(scorer)
    assert len({id(t) for t in seen}) == 2 and backbone.tokenizer not in seen
    run_pair(Scorer(backbone))  # new threads, another scorer: the same two copies
    assert {id(t) for t in seen[2:]} == {id(t) for t in seen[:2]} and backbone.tokenizers.copies == 2


def test_scorer_is_safe_from_several_threads(tiny_backbone) -> None:
    """Threads scoring at once (two scorers of one backbone, different source lengths, so their
    tokenizer settings differ on every call) all get the one-thread answer."""
    scorers = [Scorer(tiny_backbone, max_source_length=n) for n in (512, 64)]
    prompts, sets = _batch(tiny_backbone, seed=1)
    expected = scorers[0].score(TEXTS, prompts, sets).loglik
    results, errors = [], []

    def work(scorer: Scorer) -> None:
        try:
            for _ in range(20):
                results.append(scorer.score(TEXTS, prompts, sets).loglik)
        except Exception as exc:  # collected: an exception in a thread would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(scorers[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 80
    finite = torch.isfinite(expected)
    for r in results:  # the texts are far shorter than 64 tokens: both scorers agree
        assert torch.allclose(r[finite], expected[finite], atol=1e-4)


def test_a_failing_shard_raises_after_every_shard_is_done() -> None:
    running, finished = threading.Event(), []

    def score(texts, prompts, labels) -> Scores:
        if "bad" in texts:
            running.wait(5)
            raise ValueError("bad row")
        running.set()
        time.sleep(0.2)
        finished.append(texts)
        return Scores(torch.zeros(len(texts), 2), [2] * len(texts))

    sharded = ShardedScore(score, 2)
    try:
        with pytest.raises(ValueError, match="bad row"):
            sharded(["bad", "good"], torch.zeros(1, 4), [None, None])
        assert finished == [["good"]]  # the other shard had finished when the error surfaced
    finally:
        sharded.close()


def test_merge_places_rows_and_pads_with_minus_inf() -> None:
    a = Scores(torch.tensor([[1.0, 2.0]]), [2])
    b = Scores(torch.tensor([[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]), [3, 3])
    out = merge([a, b], [[1], [0, 2]], 3)
    assert out.sizes == [3, 2, 3]
    assert out.loglik[1].tolist() == [1.0, 2.0, float("-inf")]
    assert out.loglik[0].tolist() == [3.0, 4.0, 5.0] and out.loglik[2].tolist() == [6.0, 7.0, 8.0]


@pytest.mark.parametrize(
    ("shards", "device", "threads", "expected"),
    [(None, "cpu", 2, (2, 1)), (None, "cpu", 8, (2, 4)), (None, "cpu", 1, (1, 1)), (3, "cpu", 8, (3, 2)),
     (4, "cpu", 2, (4, 1)), (None, "cuda", 16, (1, 16)), (2, "cuda", 16, (2, 16))],
)
def test_plan(shards, device, threads, expected) -> None:
    assert plan(shards, torch.device(device), threads) == expected


@pytest.mark.parametrize(("shards", "threads"), [(0, None), (2, 0)])
def test_shards_and_threads_must_be_positive(shards, threads) -> None:
    with pytest.raises(ValueError, match="shards and threads"):
        ShardedScore(lambda *a: None, shards, threads)


def test_shard_threads_run_torch_on_their_share_of_the_threads() -> None:
    """Compiled CPU kernels keep the count of the thread that built them, so the shard threads
    (where warm-up compiles) must have theirs; the calling thread keeps its own."""
    before = torch.get_num_threads()
    seen = []

    def score(texts, prompts, labels) -> Scores:
        seen.append(torch.get_num_threads())
        time.sleep(0.05)  # both shards in flight at once: two threads
        return Scores(torch.zeros(len(texts), 1), [1] * len(texts))

    sharded = ShardedScore(score, 2, threads=1)
    try:
        assert sharded.run(torch.get_num_threads) == 1
        sharded(["a", "b", "c"], torch.zeros(1, 4), [None] * 3)
    finally:
        sharded.close()
    assert seen == [1, 1] and torch.get_num_threads() == before


@pytest.mark.parametrize("compile", [True, False])
def test_warm_up_compiles_on_a_shard_thread_only_when_the_scorer_compiles(tiny_backbone, monkeypatch, compile) -> None:
    """Compiled CPU kernels keep the builder thread's thread count, so the warm-up runs on a
    shard thread (with the shards' count); an eager scorer has nothing to warm up."""
    scorer = Scorer(tiny_backbone, compile=compile)
    seen = []
    monkeypatch.setattr(scorer, "warm_up", lambda: seen.append((threading.current_thread().name,
                                                                 torch.get_num_threads())))
    with ShardedScore(scorer.score, 2, 1) as sharded:
        assert sharded.warm_up(scorer) is compile
    assert seen == ([(seen[0][0], 1)] if compile else [])
    assert not seen or seen[0][0].startswith("spp-shard")


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_balance_deals_every_row_once_into_parts_of_nearly_equal_cost(n, seed):
    g = torch.Generator().manual_seed(seed)
    costs = torch.randint(1, 900, (int(torch.randint(n, 70, (1,), generator=g)),), generator=g).tolist()
    parts = balance(costs, n)
    assert len(parts) == n and sorted(i for p in parts for i in p) == list(range(len(costs)))
    assert all(p == sorted(p) for p in parts)  # batch order inside a part
    loads = [sum(costs[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(costs)  # greedy bound: never more than one row apart


@pytest.mark.parametrize("costs", [[0, 0], [0, 0, 0, 0, 0], [5, 0, 0], [7, 7, 0]])
def test_balance_leaves_no_part_empty_when_there_are_rows_enough(costs):
    # empty texts cost 0: before ties went to the fewest rows, [0, 0] gave one shard both rows and
    # the other none, and that shard's tokenizer call failed (a 422 to POST {"texts": ["", ""]})
    for n in range(1, len(costs) + 1):
        parts = balance(costs, n)
        assert all(parts) and sorted(i for p in parts for i in p) == list(range(len(costs)))


def test_balance_evens_out_what_round_robin_by_length_does_not():
    costs = [100, 110, 200, 220, 300, 330, 400, 440]  # pairs of close lengths: round robin gives one
    order = sorted(range(len(costs)), key=costs.__getitem__)  # shard the longer row of every pair
    round_robin = [sum(costs[i] for i in order[k::2]) for k in range(2)]
    balanced = [sum(costs[i] for i in p) for p in balance(costs, 2)]
    assert round_robin == [1000, 1100] and max(balanced) - min(balanced) < 100
