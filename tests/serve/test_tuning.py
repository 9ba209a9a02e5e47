"""MicroBatchTuner: measure every micro-batch size, use the fastest, keep re-measuring."""

from __future__ import annotations

import pytest

from spp.serve.tuning import MicroBatchTuner


def _drive(tuner: MicroBatchTuner, cost: dict, rows: int, steps: int) -> list:
    """Run ``steps`` decisions where size s costs cost[s] seconds per row."""
    chosen = []
    for _ in range(steps):
        size = tuner.choose(rows)
        tuner.record(size, rows, cost[size] * rows)
        chosen.append(size)
    return chosen


def test_every_size_is_tried_then_the_fastest_is_used_and_others_re_measured():
    tuner = MicroBatchTuner(sizes=(None, 16, 8), explore_every=5)
    chosen = _drive(tuner, {None: 0.10, 16: 0.05, 8: 0.07}, rows=64, steps=20)
    assert chosen[:6] == [None, None, 16, 16, 8, 8]  # each arm: a warm-up run, then a measured one
    assert chosen.count(16) >= 11 and {None, 8} <= set(chosen[6:])  # exploration revisits
    assert tuner.costs[16] == pytest.approx(0.05)


def test_it_follows_a_change_of_regime():
    tuner = MicroBatchTuner(sizes=(None, 8), explore_every=3)
    _drive(tuner, {None: 0.10, 8: 0.05}, rows=64, steps=10)  # idle CPU: micro-batches win
    later = _drive(tuner, {None: 0.10, 8: 0.40}, rows=64, steps=30)  # loaded CPU: one forward wins
    assert later[-10:].count(None) >= 6


def test_a_warm_up_run_and_a_stale_sample_do_not_stick():
    """One slow first run of an arm is not counted; a re-measure after a long pause replaces the
    old estimate instead of being averaged with it."""
    tuner = MicroBatchTuner(sizes=(None, 8), explore_every=4)
    tuner.choose(64)
    tuner.record(None, 64, 64 * 9.0)  # warm-up: ignored
    tuner.choose(64)
    tuner.record(None, 64, 64 * 0.10)
    assert tuner.costs == {None: pytest.approx(0.10)}
    _drive(tuner, {None: 0.10, 8: 0.30}, rows=64, steps=6)  # 8 warms up, then measures slow
    assert tuner.costs[8] == pytest.approx(0.30)
    chosen = _drive(tuner, {None: 0.10, 8: 0.05}, rows=64, steps=12)  # 8 became fast
    assert tuner.costs[8] == pytest.approx(0.05)  # one re-measure replaced the stale 0.30
    assert chosen[-8:].count(8) >= 6  # the fastest again, apart from exploration


def test_small_batches_run_whole_and_are_not_measured():
    tuner = MicroBatchTuner(sizes=(None, 32, 8), min_rows=16)
    assert tuner.choose(10) is None
    tuner.record(None, 10, 99.0)
    assert tuner.costs == {}
    assert tuner.choose(20) is None
    tuner.record(None, 20, 1.0)  # the warm-up run of None
    assert tuner.choose(20) is None
    tuner.record(None, 20, 1.0)
    assert tuner.choose(20) == 8  # 32 is not smaller than 20 rows: not an option


@pytest.mark.parametrize("kwargs", [{"sizes": ()}, {"sizes": (0,)}, {"min_rows": 0}, {"explore_every": 1},
                                    {"alpha": 0.0}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        MicroBatchTuner(**kwargs)
