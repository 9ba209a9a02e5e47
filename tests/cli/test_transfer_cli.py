"""`spp transfer` end to end: registry or file sources, outputs, `spp eval` parity, errors, --recommend,
and the registry as ATTEMPT's source library (`spp train --method attempt --sources`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import Artifact, ArtifactMeta, load_artifact, save_artifact
from spp.prompts.tasks import get_task

runner = CliRunner()


def _source_file(backbone, spec_path: Path, folder: Path, *, seed: int, n: int = 4, fingerprint: str | None = None):
    spec = get_task(spec_path)
    meta = ArtifactMeta(task=spec.name, method="simple", backbone=backbone.name,
                        fingerprint=fingerprint or backbone.fingerprint, d_model=backbone.d_model, n_tokens=n,
                        task_spec=spec.to_dict(), metrics={"validation": {"accuracy": 0.5}})
    prompt = torch.randn(n, backbone.d_model, generator=torch.Generator().manual_seed(seed))  # (n, e)
    return save_artifact(Artifact(prompt, meta), folder / f"{spec.name}-{seed}.safetensors")


@pytest.fixture(params=["--registry", "SPP_HOME"])
def spp(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`spp ...` against a fresh registry given by flag or by $SPP_HOME; asserts the exit code."""
    root = tmp_path / "registry"
    monkeypatch.setenv("SPP_HOME", str(root if request.param == "SPP_HOME" else tmp_path / "unused"))

    def run(*args: str, code: int = 0):
        argv = list(args) + (["--registry", str(root)] if request.param == "--registry" else [])
        result = runner.invoke(app, argv)
        assert result.exit_code == code, (argv, result.output)
        return result

    yield run
    assert not (tmp_path / "unused").exists()


@pytest.fixture
def published(spp, tiny_backbone, demo_data, tmp_path):
    """sentiment@1, topic@1 and sentiment@2 in the registry."""
    files = [_source_file(tiny_backbone, demo_data["sentiment"], tmp_path, seed=1),
             _source_file(tiny_backbone, demo_data["topic"], tmp_path, seed=2, n=6),
             _source_file(tiny_backbone, demo_data["sentiment"], tmp_path, seed=3)]
    for f in files:
        spp("publish", str(f))
    return files


def test_transfer_over_the_whole_registry_matches_spp_eval(spp, published, demo_data, tmp_path):
    out = tmp_path / "out"
    # float32 named here, not only through conftest's $SPP_CPU_DTYPE: exact equality holds in
    # float32 alone (in bf16 different batch compositions round differently, so near-ties flip)
    result = spp("transfer", "--max-examples", "20", "--out", str(out), "--batch-size", "5", "--dtype", "float32")
    assert "sentiment@2" in result.stdout and "(100%)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["transfer.json", "transfer.schema.json", "transfer.csv", "report.md", "heatmap.png"])
    doc = json.loads((out / "transfer.json").read_text())
    assert [s["label"] for s in doc["sources"]] == ["sentiment@2", "topic@1"]  # latest version per name
    assert [t["task"] for t in doc["targets"]] == ["sentiment", "topic"]
    assert doc["relative"][0][0] == 1.0 and doc["relative"][1][1] == 1.0
    for i, ref in enumerate(["sentiment@2", "topic@1"]):
        for j, task in enumerate(["sentiment", "topic"]):
            ev = spp("eval", ref, "--task", str(demo_data[task]), "--max-eval-samples", "20", "--json",
                     "--dtype", "float32")
            assert doc["metrics"][i][j] == json.loads(ev.stdout)["metrics"], (ref, task)


def test_transfer_from_files_and_explicit_tasks(spp, tiny_backbone, demo_data, tmp_path):
    a = _source_file(tiny_backbone, demo_data["sentiment"], tmp_path, seed=1)
    b = _source_file(tiny_backbone, demo_data["topic"], tmp_path, seed=2)
    out = tmp_path / "out"
    result = spp("transfer", "--prompts", f"{a},{b}", "--tasks", str(demo_data["topic"]), "--max-examples", "10",
                 "--out", str(out), "--json")
    doc = json.loads(result.stdout)
    assert doc["sources"] == ["sentiment-1", "topic-2"] and doc["targets"] == ["topic"]
    assert doc["relative"][1] == [1.0]
    saved = json.loads((out / "transfer.json").read_text())
    assert saved["targets"][0]["n_examples"] == 10 and saved["sources"][0]["ref"] == str(a)


def test_unknown_reference_is_a_one_line_error(spp, published, tmp_path):
    result = spp("transfer", "--prompts", "sentiment@1,nope@3", "--out", str(tmp_path / "o"), code=2)
    assert "error:" in result.output and "nope" in result.output and "sentiment" in result.output
    assert "Traceback" not in result.output


def test_bad_shards_is_a_one_line_error_before_anything_loads(spp, tmp_path):
    result = spp("transfer", "--prompts", "a,b", "--shards", "0", "--out", str(tmp_path / "o"), code=2)
    assert "shards must be an integer in 1..256, got 0" in result.output and "Traceback" not in result.output


def test_a_single_prompt_is_refused(spp, published, tmp_path):
    result = spp("transfer", "--prompts", "topic@1", "--out", str(tmp_path / "o"), code=2)
    assert "at least 2 source prompts, got 1 (topic@1)" in result.output


def test_prompts_of_different_backbones_are_refused(spp, tiny_backbone, demo_data, tmp_path):
    a = _source_file(tiny_backbone, demo_data["sentiment"], tmp_path, seed=1)
    b = _source_file(tiny_backbone, demo_data["topic"], tmp_path, seed=2, fingerprint="sha256:" + "ef" * 32)
    result = spp("transfer", "--prompts", f"{a},{b}", "--out", str(tmp_path / "o"), code=2)
    assert "different backbones" in result.output and "topic-2" in result.output
    assert not (tmp_path / "o").exists()


def test_a_task_without_evaluation_data_is_a_clear_error(spp, published, tmp_path):
    folder = tmp_path / "lonely"
    folder.mkdir()
    (folder / "train.csv").write_text("review,label\ngood film,positive\nbad film,negative\n")
    spec = {"name": "lonely", "template": "{review}", "label_words": ["negative", "positive"], "file_format": "csv",
            "file_names": {"train": "train.csv"}}
    (folder / "task.json").write_text(json.dumps(spec))
    result = spp("transfer", "--tasks", str(folder / "task.json"), "--out", str(tmp_path / "o"), code=2)
    assert "task lonely has no validation data" in result.output


def test_matrix_needs_an_out_folder(spp, published):
    assert "--out DIR is required" in spp("transfer", code=2).output


def test_recommend_ranks_published_prompts_by_probe_similarity(spp, published, tmp_path):
    result = spp("transfer", "--recommend", "topic", "--probe-steps", "2", "--out", str(tmp_path), "--json")
    doc = json.loads(result.stdout)
    assert doc["task"] == "topic" and doc["probe_steps"] == 2 and doc["probe_tokens"] == 4
    ranking = doc["ranking"]
    assert sorted(r["label"] for r in ranking) == ["sentiment@2", "topic@1"]
    assert [r["rank"] for r in ranking] == [1, 2]
    assert ranking[0]["mean_cosine"] >= ranking[1]["mean_cosine"]
    assert {r["label"]: r["same_task"] for r in ranking} == {"sentiment@2": False, "topic@1": True}
    assert json.loads((tmp_path / "recommend.json").read_text()) == doc
    table = spp("transfer", "--recommend", "topic", "--probe-steps", "1", "--by", "token_cosine").stdout
    assert "initialisations for topic" in table and "(same task)" in table


def test_attempt_trains_from_published_sources_and_exports_a_collapsed_prompt(spp, published, demo_data, tmp_path):
    out = tmp_path / "attempt.safetensors"
    spp("train", str(demo_data["topic"]), "--method", "attempt", "--sources", "sentiment@1,sentiment@2",
        "--n-tokens", "4", "--backbone", load_artifact(published[0]).meta.backbone, "--max-steps", "2",
        "--max-train-samples", "32", "--max-eval-samples", "16", "--device", "cpu", "--out", str(out))
    art = load_artifact(out)
    assert art.meta.method == "attempt" and art.prompt.shape == (4, art.meta.d_model)
    expected = torch.stack([load_artifact(published[0]).prompt, load_artifact(published[2]).prompt])  # (2, 4, e)
    assert torch.equal(art.state["sources"], expected)  # frozen: still the published prompts
    assert not torch.equal(art.state["prompt"], art.prompt)  # collapsed = target + mixture, not P_t alone


def test_compile_help_states_the_default_threshold():
    """The --compile help names spp.prompts.transfer.compute.AUTO_COMPILE_ROWS (written out there
    so that `spp` does not import torch to print help)."""
    from spp.cli.transfer import Compile
    from spp.prompts.transfer.compute import AUTO_COMPILE_ROWS

    option = Compile.__metadata__[0]
    assert f"matrices of {AUTO_COMPILE_ROWS} or more" in option.help
