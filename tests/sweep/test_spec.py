"""Sweep specs: the grid expands to stable trial ids; every bad spec and an unreachable Ray
address are one-line errors (exit 2) before any trial starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spp.cli.main import app
from spp.sweep.spec import SweepSpecError, load_spec

GOOD = """
name = "s"
storage = "store"
tasks = ["rte", "cb"]
seeds = [0, 1]
dropout = ["off", "keep"]
backbones = ["random:t5-small"]
lrs = [0.1, 0.3]
max_steps = 5

[[methods]]
name = "superpos"
options = { m = 8 }

[[methods]]
name = "ept"
label = "ept*"
options = { n_tokens = 10 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_grid_expands_with_stable_ids_and_tags(tmp_path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2 * 2 * 2
    assert len({t.id for t in trials}) == len(trials)
    assert [t.id for t in load_spec(tmp_path / "spec.toml").trials()] == [t.id for t in trials]
    assert spec.storage_path() == tmp_path / "store"
    ept = next(t for t in trials if t.method == "ept")
    assert ept.options == {"n_tokens": 10} and ept.label == "ept*"
    assert ept.tags("s") == {"sweep": "s", "trial": ept.id, "task": ept.task_name, "method": "ept*",
                             "dropout": ept.dropout, "seed": str(ept.seed)}
    assert {t.train["lr"] for t in trials} == {0.1, 0.3} and {t.train["max_steps"] for t in trials} == {5}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('"rte", "cb"', '"rte", "nosuch"'), "unknown task 'nosuch'"),
        (lambda s: s.replace('name = "ept"', 'name = "nosuch"'), "unknown method 'nosuch'"),
        (lambda s: s.replace("m = 8", "mm = 8"), "unknown option(s) for this method: mm"),
        (lambda s: s.replace("m = 8", "m = 0"), "m must be"),
        (lambda s: s.replace("seeds = [0, 1]", "seeds = []"), "the grid is empty: 'seeds' has no values"),
        (lambda s: s.replace('tasks = ["rte", "cb"]', "tasks = []"), "the grid is empty: 'tasks' has no values"),
        (lambda s: s.replace('dropout = ["off", "keep"]', 'dropout = ["maybe"]'), "dropout must be one of"),
        (lambda s: s.replace("max_steps = 5", "max_step = 5"), "unknown sweep spec key(s): max_step"),
        (lambda s: s.replace("max_steps = 5", "max_steps = 0"), "max_steps must be a positive integer"),
        (lambda s: s + "\n[[methods]]\nname = \"ept\"\nlabel = \"ept*\"\n", "two methods share a label"),
        (lambda s: s.replace("[[methods]]", "[[methods]]\nbogus = 1", 1), "unknown key(s) bogus"),
        (lambda s: s.replace("name = \"s\"", "name = \"s\"\ntasks ="), "not valid TOML"),
    ],
)
def test_bad_spec_is_one_line_before_any_trial(tmp_path, edit, message) -> None:
    result = CliRunner().invoke(app, ["sweep", str(_write(tmp_path, edit(GOOD)))])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in " ".join(result.output.split())
    assert not (tmp_path / "store").exists()


def test_unreachable_ray_address_is_one_line(tmp_path) -> None:
    pytest.importorskip("ray")
    result = CliRunner().invoke(app, ["sweep", str(_write(tmp_path, GOOD)), "--address", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in " ".join(result.output.split())
    assert not (tmp_path / "store").exists()


def test_missing_spec_file() -> None:
    with pytest.raises(SweepSpecError, match="no such sweep spec"):
        load_spec("/nonexistent/spec.toml")
