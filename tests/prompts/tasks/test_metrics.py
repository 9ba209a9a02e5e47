"""GLUE/SuperGLUE metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import Example, TaskData
from spp.prompts.tasks.metrics import METRICS, compute_metrics
from spp.prompts.tasks import main_score
from spp.prompts.tasks import METRIC_NAMES, TaskError


def make_data(task: str, labels, *, targets=None, groups=None) -> TaskData:
    spec = get_task(task)
    n = len(labels)
    targets = targets or [None] * n
    groups = groups or [None] * n
    examples = [Example({}, f"x{i}", labels[i], targets[i], groups[i]) for i in range(n)]
    return TaskData(spec, "validation", examples, {})


def test_metric_names_match_implementations():
    assert set(METRICS) == set(METRIC_NAMES)


def test_accuracy_and_invalid_predictions():
    data = make_data("rte", [0, 1, 1, 0])
    assert compute_metrics("rte", [0, 1, 0, 0], data) == {"accuracy": 0.75}
    assert compute_metrics("rte", [-1, 1, -1, 0], data) == {"accuracy": 0.5}  # -1 (invalid) is wrong


def test_mcc_hand_computed_and_constant_predictions():
    data = make_data("cola", [1, 1, 1, 0, 0, 0])
    # TP=2 TN=2 FP=1 FN=1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    assert compute_metrics("cola", [1, 1, 0, 0, 0, 1], data)["mcc"] == pytest.approx(1 / 3)
    assert compute_metrics("cola", [1] * 6, data) == {"mcc": 0.0}  # undefined -> 0, not NaN


def test_binary_f1_and_accuracy_mean():
    data = make_data("mrpc", [1, 1, 0, 0, 1])
    m = compute_metrics("mrpc", [1, 0, 0, 1, 1], data)  # TP=2 FP=1 FN=1 -> F1 = 4/6
    assert m == pytest.approx({"f1": 2 / 3, "accuracy": 3 / 5})
    assert main_score(m) == pytest.approx((2 / 3 + 3 / 5) / 2)
    assert compute_metrics("qqp", [0] * 5, make_data("qqp", [1, 1, 0, 0, 1]))["f1"] == 0.0


def test_cb_macro_f1_over_all_three_classes():
    data = make_data("cb", [0, 0, 1, 2, 2, 2])
    m = compute_metrics("cb", [0, 1, 1, 2, 2, 0], data)
    # class 0: P=1/2 R=1/2 -> 1/2; class 1: P=1/2 R=1 -> 2/3; class 2: P=1 R=2/3 -> 4/5
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # A class never gold nor predicted still counts (F1 0), as in T5's mean_multiclass_f1.
    assert compute_metrics("cb", [0, 0], make_data("cb", [0, 0]))["macro_f1"] == pytest.approx(1 / 3)


def test_multirc_em_groups_by_question_and_f1a_over_answers():
    groups = ["0/0", "0/0", "0/0", "0/1", "0/1", "1/0"]
    data = make_data("multirc", [1, 0, 1, 0, 1, 1], groups=groups)
    m = compute_metrics("multirc", [1, 0, 1, 1, 1, 1], data)  # question 0/1 has one wrong answer
    assert m["em"] == pytest.approx(2 / 3)
    assert m["f1a"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 0))  # TP=4 FP=1 FN=0
    with pytest.raises(TaskError, match="group"):
        compute_metrics("multirc", [1] * 6, make_data("multirc", [1, 0, 1, 0, 1, 1]))


def test_stsb_correlations_use_label_word_numbers_against_unrounded_targets():
    targets = [0.1, 1.3, 1.9, 4.2]
    data = make_data("stsb", [0, 6, 10, 21], targets=targets)
    preds = [0, 5, 10, 25]  # words "0.0", "1.0", "2.0", "5.0"
    x, y = [0.0, 1.0, 2.0, 5.0], targets
    mx, my = sum(x) / 4, sum(y) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    expected = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    m = compute_metrics("stsb", preds, data)
    assert m["pearson"] == pytest.approx(expected)
    assert m["spearman"] == pytest.approx(1.0)  # same order
    assert m["pearson"] != pytest.approx(1.0)  # not computed on the rounded gold ids
    assert compute_metrics("stsb", [3] * 4, data) == {"pearson": 0.0, "spearman": 0.0}


def test_errors_are_task_errors():
    data = make_data("rte", [0, 1])
    with pytest.raises(TaskError, match="1 predictions for 2 examples"):
        compute_metrics("rte", [0], data)
    with pytest.raises(TaskError, match="-1..1"):
        compute_metrics("rte", [0, 2], data)
    with pytest.raises(TaskError, match="no labels"):
        compute_metrics("rte", [0, 0], make_data("rte", [None, None]))


def test_main_score_is_the_mean():
    assert main_score({"pearson": 0.8, "spearman": 0.6}) == pytest.approx(0.7)
    assert main_score({"mcc": -0.5}) == -0.5
    assert math.isnan(main_score({}))
    assert main_score({"accuracy": 0.5, "invalid_rate": 0.25}) == 0.5  # bookkeeping keys ignored
