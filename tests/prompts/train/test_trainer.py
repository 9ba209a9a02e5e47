"""Trainer: learning from chance, frozen backbone, gradients only to the method, artifact metadata."""

from __future__ import annotations

import json

import pytest
import torch

from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import load_split, load_splits
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.train.pipeline import train_to_artifact
from spp.prompts.scoring import LabelSet, Scorer
from spp.prompts.train.trainer import TrainConfig, TrainEvent, build_prompt_method, train
from spp.prompts.methods import ConfigError


def _accuracy(backbone, prompt, data) -> float:
    return evaluate_prompt(Scorer(backbone), prompt, data)["accuracy"]


# ept runs as EPT* (n=10): with n=1 it plateaus near 0.77 test accuracy on this toy task.
@pytest.mark.parametrize("method, options", [("simple", {}), ("superpos", {}), ("ept", {"n_tokens": 10})])
def test_training_lifts_accuracy_from_chance(tiny_backbone, demo_data, method: str, options: dict) -> None:
    """The synthetic task is solvable only by a prompt that plays the missing instruction."""
    task = get_task(demo_data["sentiment"])
    splits = load_splits(task, seed=0)
    m = build_prompt_method(tiny_backbone, method, options, task.label_words, seed=0)
    before = _accuracy(tiny_backbone, m.collapse(), splits["test"])
    result = train(tiny_backbone, m, splits, TrainConfig(max_steps=300, eval_every=50, seed=0))
    after = result.artifact.meta.metrics["test"]["accuracy"]
    assert before < 0.7, f"{method}: an untrained prompt should be near chance, got {before}"
    assert after >= 0.8, f"{method}: trained accuracy {after} (before {before})"
    assert after == pytest.approx(_accuracy(tiny_backbone, result.artifact.prompt, splits["test"]))


def test_only_method_parameters_change_and_backbone_is_bitwise_unchanged(tiny_backbone, demo_data) -> None:
    task = get_task(demo_data["topic"])
    splits = {"train": load_split(task, "train", max_samples=32)}
    before = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    m = build_prompt_method(tiny_backbone, "residual", {"n_tokens": 4, "bottleneck": 8}, task.label_words, seed=0)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    seen = []

    def hook(event: TrainEvent) -> None:
        if event.kind == "step":
            seen.append(all(p.grad is None for p in tiny_backbone.model.parameters()))

    train(tiny_backbone, m, splits, TrainConfig(max_steps=3, batch_size=8), on_event=hook)
    assert seen and all(seen)
    after = tiny_backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(start[k], v) for k, v in m.state_dict().items() if k != "prompt")


def test_artifact_file_log_and_metadata(tiny_backbone, demo_data, tmp_path) -> None:
    task = get_task(demo_data["sentiment"])
    events: list[str] = []
    config = TrainConfig(max_steps=4, batch_size=8, eval_every=2, seed=3, grad_accum=2)
    result, path = train_to_artifact(
        tiny_backbone, task, "superpos", {"n_tokens": 5, "m": 16}, config, out=tmp_path / "a.safetensors",
        max_eval=20, log_path=tmp_path / "metrics.jsonl", on_event=lambda e: events.append(e.kind),
    )
    meta = result.artifact.meta
    assert path.is_file() and meta.task == "sentiment" and meta.method == "superpos"
    assert meta.n_tokens == 5 and meta.d_model == tiny_backbone.d_model and meta.fingerprint == tiny_backbone.fingerprint
    assert meta.method_config == {"n_tokens": 5, "m": 16, "softmax": False}
    assert meta.trainable_params == 5 * (tiny_backbone.d_model * 16 + 16)
    assert meta.hparams["lr"] == 0.01 and meta.hparams["weight_decay"] == 1e-5 and meta.hparams["grad_accum"] == 2
    assert meta.steps == 4 and meta.seed == 3 and meta.dataset["sizes"]["validation"] == 20
    # local data is named by folder name + file sha256: no absolute path travels with the artifact
    assert meta.dataset["id"].startswith("local:") and "/" not in meta.dataset["id"] and len(meta.dataset["sha256"]) == 64
    assert set(meta.metrics) == {"validation", "test"} and list(meta.task_spec["label_words"]) == ["negative", "positive"]
    assert {"state.E_freeze", "state.delta", "state.p_prime"} <= {f"state.{k}" for k in result.artifact.state}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "step" in r] == [1, 2, 3, 4]
    assert "validation" in rows[1] and "final" in rows[-1]
    assert events[0] == "start" and events[-1] == "end" and events.count("eval") == 2


def test_best_checkpoint_is_restored(tiny_backbone, demo_data) -> None:
    task = get_task(demo_data["sentiment"])
    splits = load_splits(task, max_train=64, max_eval=40, seed=0)
    m = build_prompt_method(tiny_backbone, "simple", {}, task.label_words, seed=0)
    result = train(tiny_backbone, m, splits, TrainConfig(max_steps=6, batch_size=8, eval_every=1, lr=3.0))
    scores = [r["validation"]["accuracy"] for r in result.history]
    best = max(scores)
    assert result.best_step == scores.index(best) + 1
    assert result.artifact.meta.metrics["validation"]["accuracy"] == pytest.approx(best)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "lr"), ({"epochs": 0}, "epochs"), ({"mode": "beam"}, "mode"),
     ({"max_steps": 0}, "max_steps"), ({"grad_accum": 0}, "grad_accum")],
)
def test_bad_train_config_names_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kwargs)


def test_evaluation_sees_no_backbone_dropout(tiny_backbone_dir, demo_data) -> None:
    """A backbone kept in train mode for --dropout keep evaluates deterministically, then trains on."""
    from spp.prompts.backbone import load_backbone

    backbone = load_backbone(str(tiny_backbone_dir), device="cpu", dtype="float32", dropout="keep")
    for module in backbone.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5  # the toy config has none; give dropout something to perturb
    assert backbone.model.training
    data = load_splits(get_task(demo_data["sentiment"]), seed=0)["test"]
    prompt = torch.randn(4, backbone.d_model, generator=torch.Generator().manual_seed(0))
    scorer = Scorer(backbone)
    runs = [evaluate_prompt(scorer, prompt, data) for _ in range(2)]
    assert runs[0] == runs[1]
    assert backbone.model.training  # train mode (dropout on) restored for the next step
    torch.manual_seed(0)
    noisy = [scorer.score(data.texts[:8], prompt, LabelSet.build(backbone, data.task.label_words)).loglik for _ in range(2)]
    assert not torch.equal(*noisy)  # outside evaluation, dropout really is on
