"""`spp train / eval / methods / tasks / demo` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import Artifact, ArtifactMeta, load_artifact, save_artifact

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error:") or any(line.startswith("error:") for line in lines), result.output
    assert pattern in " ".join(result.output.split()), result.output


def write_spec(folder: Path, rows: list[tuple[str, str]], *, label_words=("negative", "positive")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        lines = ["review,label"] + [f"{t},{y}" for t, y in rows]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    spec = {"name": "mini", "template": "{review}", "label_words": list(label_words), "file_format": "csv",
            "file_names": {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"}}
    (folder / "task.json").write_text(json.dumps(spec))
    return folder / "task.json"


def test_train_then_eval_round_trip(tiny_backbone_dir, demo_data, tmp_path) -> None:
    out = tmp_path / "p.safetensors"
    result = run("train", demo_data["topic"], "--method", "simple", "--backbone", tiny_backbone_dir, "--max-steps", 3,
                 "--batch-size", 8, "--n-tokens", 4, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["artifact"] == str(out) and summary["steps"] == 3 and summary["trainable_params"] == 4 * 64
    art = load_artifact(out)
    assert art.meta.n_tokens == 4 and art.meta.task == "topic"
    assert (tmp_path / "p.metrics.jsonl").is_file()
    ev = run("eval", out, "--split", "test", "--json")
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["examples"] == 100 and report["task"] == "topic"
    assert report["metrics"]["accuracy"] == pytest.approx(art.meta.metrics["test"]["accuracy"])
    one_shard = run("eval", out, "--split", "test", "--json", "--shards", 1)  # the default here is 2 on 2 cores
    assert one_shard.exit_code == 0 and json.loads(one_shard.stdout)["metrics"] == report["metrics"]


def test_methods_json_counts(tmp_path) -> None:
    result = run("methods", "--backbone", "random:google/t5-base-lm-adapt", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    counts = {r["method"]: r["trainable_params"] for r in report["methods"]}
    assert report["backbone_params"] == 247_577_856 and report["d_model"] == 768
    assert counts["simple"] == 10 * 768 and counts["superpos"] == 10 * (768 * 128 + 128) and counts["ept"] == 3 * 768


def test_tasks_lists_the_catalogue() -> None:
    result = run("tasks", "--json")
    assert result.exit_code == 0
    assert {t["name"] for t in json.loads(result.stdout)} >= {"rte", "mnli", "stsb", "multirc", "wsc", "copa"}


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["train", "nosuchtask"], "unknown task 'nosuchtask'"),
        (["train", "rte", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["train", "rte", "--method", "simple", "--m", "8"], "--m does not apply to method simple"),
        (["train", "rte", "--batch-size", "0"], "batch_size must be a positive integer"),
        (["eval", "missing.safetensors", "--shards", "0"], "shards must be an integer in 1..256"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, pattern, tiny_backbone_dir) -> None:
    one_line_error(run(*args, "--backbone", tiny_backbone_dir), pattern)


def test_missing_data_files(tiny_backbone_dir, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    one_line_error(run("train", "rte", "--backbone", tiny_backbone_dir, "--data-dir", tmp_path / "empty"), "rte")


def test_malformed_data_file(tiny_backbone_dir, tmp_path) -> None:
    spec = write_spec(tmp_path / "bad", [("good movie", "positive")])
    (tmp_path / "bad" / "train.csv").write_text("wrongcolumn,other\nx,y\n")
    one_line_error(run("train", spec, "--backbone", tiny_backbone_dir, "--max-steps", 1), "train.csv")


def test_label_outside_label_words(tiny_backbone_dir, tmp_path) -> None:
    spec = write_spec(tmp_path / "lab", [("good movie", "positive"), ("bad film", "meh")])
    one_line_error(run("train", spec, "--backbone", tiny_backbone_dir, "--max-steps", 1), "meh")


def test_init_artifact_with_other_d_model(tiny_backbone_dir, demo_data, tmp_path) -> None:
    meta = ArtifactMeta(task="x", method="simple", backbone="b", fingerprint="sha256:00", d_model=32, n_tokens=2)
    path = save_artifact(Artifact(prompt=torch.zeros(2, 32), meta=meta), tmp_path / "other.safetensors")
    result = run("train", demo_data["topic"], "--method", "simple", "--backbone", tiny_backbone_dir,
                 "--init-from", path, "--max-steps", 1)
    one_line_error(result, "d_model 32")


def test_unknown_backbone_is_one_line(tmp_path) -> None:
    one_line_error(run("train", "rte", "--backbone", tmp_path / "absent"), "cannot load T5 backbone")


def test_demo_runs_end_to_end(tmp_path) -> None:
    result = run("demo", "--out", tmp_path / "demo", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [t["task"] for t in report["tasks"]] == ["sentiment", "topic"]
    for task in report["tasks"]:
        assert Path(task["artifact"]).is_file()
        assert task["accuracy_before"] < 0.7 and task["test"]["accuracy"] >= 0.85, task
    assert (tmp_path / "demo" / "backbone" / "config.json").is_file()
    assert any(line.startswith("spp serve") for line in report["next"])


def test_init_from_file_starts_from_that_prompt(tiny_backbone_dir, demo_data, tmp_path) -> None:
    from spp.prompts.backbone import load_backbone

    bb = load_backbone(str(tiny_backbone_dir), device="cpu")
    source = torch.randn(3, bb.d_model)
    meta = ArtifactMeta(task="topic", method="simple", backbone=str(tiny_backbone_dir), fingerprint=bb.fingerprint,
                        d_model=bb.d_model, n_tokens=3)
    src = save_artifact(Artifact(prompt=source, meta=meta), tmp_path / "src.safetensors")
    out = tmp_path / "spot.safetensors"
    result = run("train", demo_data["topic"], "--method", "simple", "--backbone", tiny_backbone_dir,
                 "--init", f"artifact:{src}", "--max-steps", 1, "--lr", 1e-9, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    art = load_artifact(out)
    assert art.meta.parent == str(src) and art.meta.n_tokens == 3
    assert torch.allclose(art.prompt, source, atol=1e-5)  # lr ~0: still the source prompt


def test_init_from_needs_a_method_with_init(tiny_backbone_dir, demo_data, tmp_path) -> None:
    one_line_error(run("train", demo_data["topic"], "--method", "superpos", "--backbone", tiny_backbone_dir,
                       "--init-from", tmp_path / "x.safetensors"), "--init-from needs a method")
