"""evaluate_artifact: the metrics of ``spp eval``, with the split's size reported before scoring."""

from __future__ import annotations

import torch

from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.scoring import Scorer
from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import load_split
from spp.prompts.train.pipeline import evaluate_artifact


def test_evaluate_artifact_reports_the_split_size_then_each_batch(tiny_backbone, demo_data) -> None:
    spec = get_task(demo_data["topic"])
    prompt = torch.randn(4, tiny_backbone.d_model, generator=torch.Generator().manual_seed(0))  # (n, e)
    meta = ArtifactMeta(task=spec.name, method="simple", backbone=tiny_backbone.name,
                        fingerprint=tiny_backbone.fingerprint, d_model=tiny_backbone.d_model, n_tokens=4,
                        task_spec=spec.to_dict())
    events: list[tuple[str, int]] = []
    metrics, n = evaluate_artifact(tiny_backbone, Artifact(prompt, meta), spec, split="test", max_samples=50,
                                   batch_size=16, progress=lambda k: events.append(("batch", k)),
                                   on_examples=lambda k: events.append(("total", k)))
    assert n == 50 and events[0] == ("total", 50)  # a bar's total, known before the first batch
    assert [k for kind, k in events[1:]] == [16, 16, 16, 2] and {kind for kind, _ in events[1:]} == {"batch"}
    data = load_split(spec, "test", max_samples=50)
    assert metrics == evaluate_prompt(Scorer(tiny_backbone), prompt, data)
