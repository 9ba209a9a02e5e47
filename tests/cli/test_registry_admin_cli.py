"""`spp registry migrate|copy`, `--registry`/`$SPP_REGISTRY` with a shared registry, and the
one-line errors for bad registry locations (real PostgreSQL server)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import Artifact, ArtifactMeta, save_artifact

runner = CliRunner()


def _file(folder: Path, task: str, seed: int) -> str:
    meta = ArtifactMeta(task=task, method="simple", backbone="random:t5-small", fingerprint="sha256:" + "ef" * 32,
                        d_model=8, n_tokens=2, metrics={"validation": {"accuracy": 0.5}})
    art = Artifact(prompt=torch.randn(2, 8, generator=torch.Generator().manual_seed(seed)), meta=meta)
    return str(save_artifact(art, folder / f"{task}-{seed}.safetensors"))


def spp(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.output)
    return result


def _listing(registry: str) -> list[tuple]:
    rows = json.loads(spp("list", "--json", "--registry", registry).stdout)
    return [(r["ref"], r["sha256"], r["aliases"], r["tags"], r["deprecated"]) for r in rows]


def test_copy_a_directory_registry_to_postgres_and_back(tmp_path: Path, pg_registry_url: str, monkeypatch) -> None:
    monkeypatch.setenv("SPP_BLOB_CACHE", str(tmp_path / "cache"))
    local = str(tmp_path / "local")
    for seed in range(4):
        spp("publish", _file(tmp_path, "rte", seed), "--registry", local)
    spp("publish", _file(tmp_path, "cb", 9), "--alias", "prod", "--tag", "team=nlp", "--registry", local)
    spp("alias", "set", "rte@2", "prod", "--registry", local)
    spp("deprecate", "rte@3", "--registry", local)
    spp("rm", "rte@4", "--registry", local)  # rte's counter is 4: the copy must not reuse 4

    out = spp("registry", "copy", local, pg_registry_url, "--json").stdout
    assert json.loads(out) == {"copied": ["cb@1", "rte@1", "rte@2", "rte@3"], "present": [], "aliases": 2}
    assert _listing(pg_registry_url) == _listing(local)
    again = json.loads(spp("registry", "copy", local, pg_registry_url, "--json").stdout)
    assert again["copied"] == [] and len(again["present"]) == 4  # idempotent
    back = str(tmp_path / "back")
    spp("registry", "copy", pg_registry_url, back)
    assert _listing(back) == _listing(local)
    for registry in (pg_registry_url, back):
        assert "published rte@5" in spp("publish", _file(tmp_path, "rte", 7), "--registry", registry).stdout
        spp("verify", "--registry", registry)
    err = spp("registry", "copy", local, local, code=2).output
    assert "are the same registry" in err


def test_spp_registry_env_selects_the_shared_registry(tmp_path: Path, pg_registry_url: str, monkeypatch) -> None:
    monkeypatch.setenv("SPP_REGISTRY", pg_registry_url)
    monkeypatch.setenv("SPP_HOME", str(tmp_path / "must-not-be-used"))
    monkeypatch.setenv("SPP_BLOB_CACHE", str(tmp_path / "cache"))
    assert "published cb@1" in spp("publish", _file(tmp_path, "cb", 1)).stdout
    assert "already at revision 0002" in " ".join(spp("registry", "migrate").stdout.split())
    assert [r["ref"] for r in json.loads(spp("list", "--json").stdout)] == ["cb@1"]
    assert not (tmp_path / "must-not-be-used").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["unreachable", "wrong-password", "unknown-scheme", "unwritable-store"])
def test_bad_registry_locations_are_one_line_with_the_password_masked(case: str, postgres, tmp_path: Path,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("SPP_BLOB_CACHE", str(tmp_path / "cache"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    db = postgres.create_database()
    url, fragment = {
        "unreachable": (f"postgresql://spp:hunter2@127.0.0.1:{_free_port()}/x?store=file:///tmp/s", "is unavailable"),
        "wrong-password": (postgres.url(db, password="hunter2", store="file:///tmp/s"), "password authentication failed"),
        "unknown-scheme": ("mysql://spp:hunter2@127.0.0.1/x", "unsupported registry location"),
        "unwritable-store": (postgres.url(db, store=f"file://{blocker}/store"), "Not a directory"),
    }[case]
    monkeypatch.chdir(tmp_path)
    result = spp("publish", _file(tmp_path, "rte", 1), "--registry", url, code=2)
    line = " ".join(result.output.split())
    assert line.startswith("error:") and fragment in line and "hunter2" not in result.output
    assert url.replace("hunter2", "***").split("?")[0] in line
    assert "Traceback" not in result.output and not (tmp_path / "mysql:").exists()


def test_serve_refuses_a_registry_directory_that_does_not_exist(tmp_path: Path) -> None:
    from spp.prompts.demo.toy import make_tiny_backbone_dir

    model = make_tiny_backbone_dir(tmp_path / "model", steps=0)  # untrained: the server stops before using it
    result = spp("serve", "--registry", str(tmp_path / "typo"), "--backbone", str(model), "--device", "cpu",
                 "--port", "1", code=2)
    assert "registry directory" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "typo").exists()
