"""The metadata schema: indexed fields declared once; one main score."""

from __future__ import annotations

import dataclasses
import math
import sqlite3

import pytest

from spp.prompts.artifact import ArtifactError, ArtifactMeta, IndexedMeta, indexed_fields
from spp.registry import Registry, Version
from spp.registry.index import publish_row


def meta(**overrides) -> ArtifactMeta:
    values = dict(task="rte", method="simple", backbone="b", fingerprint="sha256:00", d_model=4, n_tokens=2)
    return ArtifactMeta(**(values | overrides))


def test_main_metric_is_the_mean_of_the_task_metrics_only() -> None:
    m = meta(metrics={"test": {"accuracy": 0.8, "f1": 0.6, "invalid_rate": 0.5}},
             task_spec={"metrics": ["accuracy", "f1"]})
    assert m.main_metric == pytest.approx(0.7)
    # without a spec, only known metric names count (generate mode's invalid_rate never does)
    assert meta(metrics={"validation": {"accuracy": 0.4, "invalid_rate": 1.0}}).main_metric == pytest.approx(0.4)
    # the test split wins over validation; no scored split: None
    assert meta(metrics={"validation": {"accuracy": 0.1}, "test": {"accuracy": 0.9}}).main_metric == 0.9
    assert meta().main_metric is None and meta(metrics={"test": {"loss": 1.0}}).main_metric is None


def test_a_spec_metric_outside_the_known_names_is_still_the_tasks_score() -> None:
    m = meta(metrics={"test": {"mcc": 0.3, "invalid_rate": 0.2}}, task_spec={"metrics": ["mcc"]})
    assert m.main_metric == pytest.approx(0.3) and not math.isnan(m.main_metric)


def test_indexed_fields_are_the_index_columns_and_version_fields(tmp_path) -> None:
    names = [f.name for f in indexed_fields()]
    assert names == [f.name for f in dataclasses.fields(IndexedMeta)]
    assert set(names) <= {f.name for f in dataclasses.fields(ArtifactMeta)}
    assert set(names) <= {f.name for f in dataclasses.fields(Version)}
    with Registry(tmp_path / "r") as reg:
        reg.list()  # creates the index
    with sqlite3.connect(tmp_path / "r" / "index.sqlite") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(versions)")}
    assert set(names) <= columns
    row = publish_row(meta(parent="x@1"), name="rte", sha256="00", size=1, created_at="now")
    assert set(row) == set(names) | {"name", "sha256", "size", "created_at", "main_metric"}
    assert row["parent"] == "x@1"


@pytest.mark.parametrize("field, value", [("d_model", 0), ("n_tokens", True), ("task", ""), ("fingerprint", None)])
def test_required_fields_are_checked(field: str, value) -> None:
    with pytest.raises(ArtifactError, match=field):
        meta(**{field: value})


@pytest.mark.parametrize("template", ["{review:>300000000}", "{review.__class__}"])
def test_metadata_with_a_hostile_template_is_refused(template: str, unchecked_templates, tmp_path) -> None:
    import torch

    from spp.prompts.artifact import Artifact, artifact_bytes, decode, read_metadata

    spec = {"name": "rte", "template": template, "label_words": ["yes", "no"]}
    with pytest.raises(ArtifactError, match=r"task spec of 'rte': template placeholder \{review"):
        meta(task_spec=spec)
    with unchecked_templates():  # as an older spp or another writer would have written it
        data = artifact_bytes(Artifact(prompt=torch.zeros(2, 4), meta=meta(task_spec=spec, n_tokens=2, d_model=4)))
    with pytest.raises(ArtifactError, match="template placeholder"):
        decode(data)
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(data)
    with pytest.raises(ArtifactError, match="hostile.safetensors: task spec of 'rte': template placeholder"):
        read_metadata(path)
