"""`spp publish / list / show / alias / tag / deprecate / rm / verify / gc / push / pull / export / import-peft`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import Artifact, ArtifactMeta, save_artifact

runner = CliRunner()


def _artifact_file(folder: Path, task: str = "rte", seed: int = 0, **meta) -> Path:
    gen = torch.Generator().manual_seed(seed)
    fields = dict(task=task, method="superpos", backbone="google/t5-base-lm-adapt", fingerprint="sha256:" + "cd" * 32,
                  d_model=16, n_tokens=4, metrics={"validation": {"accuracy": 0.6 + seed / 100}})
    fields.update(meta)
    art = Artifact(prompt=torch.randn(4, 16, generator=gen), meta=ArtifactMeta(**fields))
    return save_artifact(art, folder / f"{task}-{seed}.safetensors")


@pytest.fixture(params=["--registry", "SPP_HOME"])
def spp(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `spp ...` against a fresh registry given by flag or by $SPP_HOME; returns the result."""
    root = tmp_path / "registry"
    if request.param == "SPP_HOME":
        monkeypatch.setenv("SPP_HOME", str(root))
    else:
        monkeypatch.setenv("SPP_HOME", str(tmp_path / "must-not-be-used"))

    def run(*args: str, code: int = 0):
        argv = list(args) + (["--registry", str(root)] if request.param == "--registry" else [])
        result = runner.invoke(app, argv)
        assert result.exit_code == code, (argv, result.output)
        return result

    run.root = root
    yield run
    assert not (tmp_path / "must-not-be-used").exists()


def test_publish_list_show(spp, tmp_path: Path) -> None:
    first = spp("publish", str(_artifact_file(tmp_path, seed=1)), "--alias", "prod", "--tag", "team=nlp")
    assert "published rte@1" in first.stdout
    again = spp("publish", str(_artifact_file(tmp_path, seed=1)), "--json")
    assert json.loads(again.stdout)["ref"] == "rte@1" and json.loads(again.stdout)["created"] is False
    spp("publish", str(_artifact_file(tmp_path, "cb", seed=2, parent="rte@1")))
    spp("publish", str(_artifact_file(tmp_path, "rte", seed=3, method="ept")))

    table = spp("list").stdout
    assert "rte" in table and "superpos" in table and "prod" in table and "0.6100" in table
    rows = json.loads(spp("list", "--json").stdout)
    assert [r["ref"] for r in rows] == ["cb@1", "rte@1", "rte@2"]
    assert [r["ref"] for r in json.loads(spp("list", "--task", "rte", "--method", "ept", "--json").stdout)] == ["rte@2"]
    assert [r["ref"] for r in json.loads(spp("list", "--tag", "team=nlp", "--json").stdout)] == ["rte@1"]

    shown = json.loads(spp("show", "rte@prod", "--json").stdout)
    assert shown["ref"] == "rte@1" and shown["tags"] == {"team": "nlp"} and shown["aliases"] == ["prod"]
    assert shown["metrics"] == {"validation": {"accuracy": 0.61}} and Path(shown["blob"]).is_file()
    assert shown["lineage"] == {"ancestors": [], "children": ["cb@1"]}
    assert json.loads(spp("show", "cb", "--json").stdout)["lineage"]["ancestors"] == ["rte@1"]
    text = spp("show", "rte@1").stdout
    assert "rte@1" in text and "team=nlp" in text and "accuracy" in text


def test_piped_tables_keep_whole_values(spp, tmp_path: Path) -> None:
    """Output that is not a terminal (a pipe, a file, this runner) is not squeezed to 80 columns
    with values cut to "sentim…": `spp list | grep <name>` finds what was published."""
    long_name = "a-rather-long-prompt-name-for-sentiment-analysis"
    backbone = "some-organisation/t5-base-lm-adapt-finetuned-for-something"
    spp("publish", str(_artifact_file(tmp_path, "sst2", backbone=backbone)), "--name", long_name, "--alias", "prod")
    table = spp("list").stdout
    assert long_name in table and backbone in table and "…" not in table


def test_alias_tag_deprecate_rm(spp, tmp_path: Path) -> None:
    spp("publish", str(_artifact_file(tmp_path, seed=1)))
    spp("publish", str(_artifact_file(tmp_path, seed=2)))
    assert "rte@prod -> rte@1" in spp("alias", "set", "rte@1", "prod").stdout
    assert "rte@prod -> rte@2" in spp("alias", "set", "rte", "prod").stdout
    refused = spp("rm", "rte@2", code=2)
    assert "aliased as rte@prod" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    spp("alias", "rm", "rte", "prod")
    assert "removed rte@2" in spp("rm", "rte@2").stdout
    assert "rte@1: env=dev" in spp("tag", "rte@1", "env=dev").stdout
    assert "rte@1 deprecated" in spp("deprecate", "rte@1").stdout
    assert json.loads(spp("list", "--no-deprecated", "--json").stdout) == []
    assert "every version of rte is deprecated" in spp("show", "rte", code=2).stderr
    spp("deprecate", "rte@1", "--undo")
    assert json.loads(spp("show", "rte", "--json").stdout)["ref"] == "rte@1"


def test_verify_reports_corrupt_blobs_and_exits_1(spp, tmp_path: Path) -> None:
    spp("publish", str(_artifact_file(tmp_path, seed=1)))
    spp("publish", str(_artifact_file(tmp_path, seed=2)))
    assert "2 version(s) verified" in spp("verify").stdout
    blob = Path(json.loads(spp("show", "rte@2", "--json").stdout)["blob"])
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = spp("verify", code=1)
    assert "rte@2" in result.stderr and "sha256 mismatch" in result.stderr and "rte@1" not in result.stderr
    report = json.loads(spp("verify", "--json", code=1).stdout)
    assert report["ok"] is False and [c["ref"] for c in report["corrupt"]] == ["rte@2"]
    load_error = spp("show", "rte@2", code=2).stderr
    assert load_error.startswith("error: rte@2: blob sha256 mismatch") and len(load_error.strip().splitlines()) == 1


def test_gc(spp, tmp_path: Path) -> None:
    spp("publish", str(_artifact_file(tmp_path, seed=1)))
    orphan = spp.root / "blobs" / "ff" / ("ff" * 32 + ".safetensors")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan")
    assert json.loads(spp("gc", "--json").stdout) == {"removed": [str(orphan)]}
    assert "0 file(s) removed" in spp("gc").stdout


def test_gc_grace_keeps_fresh_temp_files_unless_zero(spp, tmp_path: Path) -> None:
    spp("publish", str(_artifact_file(tmp_path, seed=1)))
    temp = spp.root / "tmp" / ".in-flight.tmp"  # a publish still writing: younger than the grace
    temp.parent.mkdir(exist_ok=True)
    temp.write_bytes(b"partial")
    assert json.loads(spp("gc", "--json").stdout) == {"removed": []} and temp.exists()
    assert json.loads(spp("gc", "--grace", "60", "--json").stdout) == {"removed": []} and temp.exists()
    assert json.loads(spp("gc", "--grace", "0", "--json").stdout) == {"removed": [str(temp)]}
    assert not temp.exists() and spp("verify").exit_code == 0
    assert "--grace" in spp("gc", "--grace", "-1", code=2).output


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"garbage", "not a valid safetensors"), (None, "no such file"), ("/dev/zero", "not a regular file")],
)
def test_publish_errors_are_one_line(spp, tmp_path: Path, content, fragment: str) -> None:
    path = Path(content) if isinstance(content, str) else tmp_path / "bad.safetensors"
    if isinstance(content, bytes):
        path.write_bytes(content)
    result = spp("publish", str(path), code=2)
    assert result.stderr.startswith("error: cannot publish") and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_bad_name_and_unknown_ref(spp, tmp_path: Path) -> None:
    result = spp("publish", str(_artifact_file(tmp_path)), "--name", "../evil", code=2)
    assert "must not contain path separators" in result.stderr
    spp("publish", str(_artifact_file(tmp_path)))
    missing = spp("show", "cola", code=2)
    assert "no prompt named 'cola'" in missing.stderr and "known names: rte" in missing.stderr
    assert "bad Hub repo 'a b/c'" in spp("push", "rte", "--repo", "a b/c", code=2).stderr
    assert "must be OWNER/NAME" in spp("pull", "justname", code=2).stderr


def test_push_pull_offline_fail_cleanly(spp, tmp_path: Path) -> None:
    spp("publish", str(_artifact_file(tmp_path)))
    pushed = spp("push", "rte", "--repo", "me/rte-prompt", code=2)  # HF_HUB_OFFLINE=1 in tests
    assert pushed.stderr.startswith("error: cannot push rte@1 to me/rte-prompt")
    pulled = spp("pull", "me/rte-prompt@main", code=2)
    assert pulled.stderr.startswith("error: cannot download me/rte-prompt@main")


def test_export_and_import_peft(spp, tmp_path: Path) -> None:
    spp("publish", str(_artifact_file(tmp_path, seed=4)))
    out = tmp_path / "adapter"
    assert "exported rte@1" in spp("export", "rte", "--peft", str(out)).stdout
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4 and config["token_dim"] == 16
    assert "already published as rte@1" in spp("import-peft", str(out)).stdout  # lossless: same content
    assert "published rte-peft@1" in spp("import-peft", str(out), "--name", "rte-peft", "--alias", "prod").stdout
    assert json.loads(spp("show", "rte-peft@prod", "--json").stdout)["sha256"] == json.loads(
        spp("show", "rte@1", "--json").stdout
    )["sha256"]
    (out / "spp_artifact.json").unlink()
    # now a foreign adapter: its backbone (base_model_name_or_path, a Hub id) must be loaded to
    # fingerprint it, which fails offline: one line naming the backbone
    failed = spp("import-peft", str(out), "--task", "rte", code=2).stderr
    assert "google/t5-base-lm-adapt" in failed and len(failed.strip().splitlines()) == 1
    (out / "adapter_model.safetensors").unlink()
    broken = spp("import-peft", str(out), "--task", "rte", "--backbone", "no-such-model", code=2).stderr
    assert "no adapter_model.safetensors" in broken  # checked before any backbone is loaded


@pytest.mark.parametrize("ref", ["rte@99999999999999999999", "rte@\u00b2", "rte@\u0661", "rte@\uff11"])
@pytest.mark.parametrize("command", [["show"], ["alias", "set"], ["tag"], ["deprecate"], ["eval"]])
def test_bad_versions_are_one_line_exit_2(spp, tmp_path: Path, command: list[str], ref: str) -> None:
    """Too large for the index (SQLite INTEGER) or not ASCII digits: one line, never a traceback."""
    spp("publish", str(_artifact_file(tmp_path)))  # rte@1 exists: "@١" must not resolve to it
    extra = {"alias": ["prod"], "tag": ["team=nlp"]}.get(command[0], [])
    result = spp(*command, ref, *extra, code=2)
    assert result.stderr.startswith(f"error: reference {ref!r}: versions ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
