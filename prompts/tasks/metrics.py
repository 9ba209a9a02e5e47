"""The standard GLUE/SuperGLUE metrics on predicted class ids (scikit-learn and scipy only).

Names (as in :data:`spp.prompts.tasks.METRIC_NAMES`): ``accuracy``; ``f1`` (binary, positive
class = id 1: MRPC, QQP); ``f1a`` (MultiRC's F1 over all answer options, same formula);
``macro_f1`` (mean of per-class F1 over all classes: CB, as T5's ``mean_multiclass_f1``);
``mcc`` (Matthews correlation: CoLA); ``pearson``/``spearman`` (STS-B: the predicted label
word's number against the unrounded gold score, the T5 recipe); ``em`` (MultiRC: share of
questions whose answers are all predicted correctly, grouped by ``Example.group``).

Values are fractions in [0, 1] (mcc, pearson, spearman in [-1, 1]), never NaN: an undefined
correlation (constant predictions) counts as 0.0, i.e. no better than chance. The main score
of a task is the mean of its metrics (SuperPos-Prompt reports two-metric tasks that way).
A prediction of -1 means "invalid" (generate mode emitted no label word): it is wrong for
every metric, and for pearson/spearman its value is -1.0 (T5's ``string_to_float`` default).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from spp.prompts.tasks.catalog import get_task
from spp.prompts.tasks.data import TaskData
from spp.prompts.tasks.spec import TaskError, TaskSpec

INVALID = -1

MetricFn = Callable[[TaskSpec, np.ndarray, np.ndarray, TaskData], float]


def compute_metrics(task: TaskSpec | str, pred_ids: Sequence[int], data: TaskData) -> dict[str, float]:
    """The task's metrics for ``pred_ids`` (class ids, -1 = invalid) against ``data``'s labels."""
    spec = get_task(task)
    preds = np.asarray([int(p) for p in pred_ids], dtype=np.int64)  # (N,)
    if len(preds) != len(data):
        raise TaskError(f"task {spec.name}: {len(preds)} predictions for {len(data)} examples")
    if not data.has_labels:
        raise TaskError(f"task {spec.name}: split {data.split} has no labels to score against")
    if preds.size and (preds.min() < INVALID or preds.max() >= spec.num_labels):
        raise TaskError(f"task {spec.name}: prediction ids must be in -1..{spec.num_labels - 1}")
    gold = np.asarray(data.labels, dtype=np.int64)  # (N,)
    return {name: _finite(METRICS[name](spec, preds, gold, data)) for name in spec.metrics}


def _finite(value: float) -> float:
    # sklearn/scipy return NaN (with a warning) for undefined correlations; report 0.0 instead
    # so a degenerate run ranks below any informative one rather than poisoning averages.
    value = float(value)
    return 0.0 if math.isnan(value) else value


def _accuracy(spec: TaskSpec, preds: np.ndarray, gold: np.ndarray, data: TaskData) -> float:
    return float(np.mean(preds == gold))


def _binary_f1(spec: TaskSpec, preds: np.ndarray, gold: np.ndarray, data: TaskData) -> float:
    # labels=[1] + micro = F1 of the positive class; unlike average="binary" it tolerates -1
    # (invalid) predictions, which simply count as misses. No positives at all: 0.0.
    return float(f1_score(gold, preds, labels=[1], average="micro", zero_division=0))


def _macro_f1(spec: TaskSpec, preds: np.ndarray, gold: np.ndarray, data: TaskData) -> float:
    labels = list(range(spec.num_labels))
    return float(f1_score(gold, preds, labels=labels, average="macro", zero_division=0))


def _mcc(spec: TaskSpec, preds: np.ndarray, gold: np.ndarray, data: TaskData) -> float:
    # Constant predictions make the denominator 0: sklearn returns 0.0 (kept by _finite too).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(matthews_corrcoef(gold, preds))


def _numbers(spec: TaskSpec, preds: np.ndarray, data: TaskData) -> tuple[np.ndarray, np.ndarray]:
    words = np.asarray([float(w) for w in spec.label_words])  # (k,)
    x = np.where(preds == INVALID, -1.0, words[np.clip(preds, 0, None)])  # (N,)
    # The unrounded gold score when the source had one, else the gold label word's number.
    y = np.asarray([e.target if e.target is not None else words[e.label] for e in data.examples])  # (N,)
    return x, y


def _correlation(fn: Callable) -> MetricFn:
    def metric(spec: TaskSpec, preds: np.ndarray, gold: np.ndarray, data: TaskData) -> float:
        x, y = _numbers(spec, preds, data)
        if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return 0.0  # undefined for constant input or a single example: count as chance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(fn(x, y)[0])

    return metric


def _exact_match(spec: TaskSpec, preds: np.ndarray, gold: np.ndarray, data: TaskData) -> float:
    groups = data.groups
    if any(g is None for g in groups):
        raise TaskError(f"task {spec.name}: metric em needs a group id ({spec.group_column}) on every example")
    all_right: dict[str, bool] = defaultdict(lambda: True)
    for g, p, t in zip(groups, preds, gold):
        all_right[g] &= bool(p == t)
    return float(np.mean(list(all_right.values())))


METRICS: Mapping[str, MetricFn] = MappingProxyType(
    {
        "accuracy": _accuracy,
        "f1": _binary_f1,
        "f1a": _binary_f1,
        "macro_f1": _macro_f1,
        "mcc": _mcc,
        "pearson": _correlation(stats.pearsonr),
        "spearman": _correlation(stats.spearmanr),
        "em": _exact_match,
    }
)
