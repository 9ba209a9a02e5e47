"""Artifact: exact round trip of tensors and every metadata field; never unpickles."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
from safetensors import safe_open

from spp.prompts.artifact import (
    Artifact,
    ArtifactError,
    ArtifactMeta,
    artifact_bytes,
    load_artifact,
    decode,
    read_metadata,
    save_artifact,
)


def make_meta(**overrides) -> ArtifactMeta:
    values = dict(
        task="rte", method="superpos", backbone="google/t5-base-lm-adapt", fingerprint="sha256:" + "ab" * 32,
        d_model=8, n_tokens=3, method_config={"n_tokens": 3, "m": 128, "softmax": False},
        task_spec={"name": "rte", "template": "{a}", "label_words": ["x", "y"]}, backbone_revision="main",
        metrics={"validation": {"accuracy": 0.75}, "test": {"accuracy": 0.5, "f1": 0.25}}, trainable_params=1234,
        hparams={"lr": 0.01, "batch_size": 16}, seed=7, dataset={"id": "aps/super_glue", "sizes": {"train": 9}},
        parent="rte@1", steps=100, wall_time_s=1.5, created_at="2026-11-21T00:00:00+00:00",
    )
    return ArtifactMeta(**(values | overrides))


def test_round_trip_is_exact(tmp_path) -> None:
    art = Artifact(prompt=torch.randn(3, 8), meta=make_meta(), state={"delta": torch.randn(3, 8, 2), "E": torch.randn(8, 2)})
    path = save_artifact(art, tmp_path / "a.safetensors")
    back = load_artifact(path)
    assert torch.equal(back.prompt, art.prompt)
    assert set(back.state) == {"delta", "E"} and all(torch.equal(back.state[k], art.state[k]) for k in art.state)
    for f in dataclasses.fields(ArtifactMeta):
        assert getattr(back.meta, f.name) == getattr(art.meta, f.name), f.name
    assert read_metadata(path) == art.meta
    assert decode(path.read_bytes()).meta == art.meta


def test_none_and_plain_strings_round_trip(tmp_path) -> None:
    art = Artifact(prompt=torch.zeros(3, 8), meta=make_meta(parent=None, backbone_revision=None, seed=None))
    back = load_artifact(save_artifact(art, tmp_path / "b.safetensors"))
    assert back.meta.parent is None and back.meta.backbone_revision is None and back.meta.seed is None


def test_metadata_is_strings_in_the_header(tmp_path) -> None:
    path = save_artifact(Artifact(prompt=torch.zeros(3, 8), meta=make_meta()), tmp_path / "c.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata()
    assert all(isinstance(v, str) for v in header.values())
    assert json.loads(header["metrics"])["test"]["f1"] == 0.25 and header["task"] == "rte"


def test_bytes_are_deterministic() -> None:
    art = Artifact(prompt=torch.ones(3, 8), meta=make_meta())
    assert artifact_bytes(art) == artifact_bytes(art)


def test_a_pickle_is_refused_not_loaded(tmp_path) -> None:
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ArtifactError):
        load_artifact(path)
    with pytest.raises(ArtifactError):
        decode(path.read_bytes())


@pytest.mark.parametrize(
    "prompt, match",
    [(torch.zeros(2, 8), "does not match"), (torch.zeros(3, 8, 1), "2-D"), (torch.full((3, 8), float("nan")), "NaN")],
)
def test_invalid_prompts_are_refused(prompt, match) -> None:
    with pytest.raises(ArtifactError, match=match):
        artifact_bytes(Artifact(prompt=prompt, meta=make_meta()))


def test_missing_and_bad_metadata(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"prompt": torch.zeros(3, 8)}, str(path), metadata={"task": "rte"})
    with pytest.raises(ArtifactError, match="missing required metadata"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="d_model"):
        make_meta(d_model=0)
    with pytest.raises(ArtifactError, match="no such file"):
        load_artifact(tmp_path / "absent.safetensors")
