"""--report-to: TensorBoard receives the metrics.jsonl rows (read back from the event file);
a tracker that is not installed is a one-line error naming its pip install."""

from __future__ import annotations

import importlib.util
import json

import pytest

from spp.prompts.errors import ConfigError
from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import load_splits
from spp.prompts.train.tracking import TensorBoardTracker, check_report_to, flatten
from spp.prompts.train.trainer import TrainConfig, build_prompt_method, train


def test_tensorboard_gets_the_same_rows_as_metrics_jsonl(tiny_backbone, demo_data, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task = get_task(demo_data["topic"])
    splits = load_splits(task, seed=0, max_train=16, max_eval=8)
    m = build_prompt_method(tiny_backbone, "ept", {}, task.label_words, seed=0)
    log = tmp_path / "m.jsonl"
    train(tiny_backbone, m, splits, TrainConfig(max_steps=3, batch_size=8, eval_every=2), log_path=log,
          trackers=[TensorBoardTracker(tmp_path / "tb")])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    logged = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    expected: dict[str, list] = {}
    for row in rows:  # the final row has no step of its own: trackers log it at the last step
        for key, value in flatten(row).items():
            expected.setdefault(key, []).append((row.get("step", 3), pytest.approx(value, rel=1e-6)))
    assert logged == expected
    assert {"loss", "prompt_norm", "validation/accuracy", "final/test/accuracy"} <= set(logged)
    assert [s for s, _ in logged["loss"]] == [1, 2, 3] and [s for s, _ in logged["validation/accuracy"]] == [2, 3]
    assert [s for s, _ in logged["final/test/accuracy"]] == [3] and "final" not in rows[-2] and "step" not in rows[-1]


def test_flatten_nests_and_skips_the_step() -> None:
    assert flatten({"step": 3, "loss": 1, "validation": {"f1": 0.5}, "note": "x", "ok": True}) == {
        "loss": 1.0, "validation/f1": 0.5}


def test_unknown_or_missing_tracker_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown --report-to 'comet'"):
        check_report_to(["comet"])
    assert check_report_to(["none"]) == []
    missing = [n for n in ("mlflow", "wandb") if importlib.util.find_spec(n) is None]
    if not missing:
        pytest.skip("mlflow and wandb are both installed here")
    with pytest.raises(ConfigError, match=f"pip install {missing[0]}"):
        check_report_to([missing[0]])
