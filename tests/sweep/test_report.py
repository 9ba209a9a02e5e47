"""`spp report`: standardized scores equal a hand-computed fixture; a Table-1 cell is the mean
(and sample std) of its seeds' registry metrics; the figures and files are written."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.registry import Registry
from spp.sweep.tables import Run, standardized, table1

FINGERPRINT = "sha256:" + "ab" * 32


def test_standardized_scores_match_a_hand_computed_fixture() -> None:
    # Two tasks, three rows, one seed each (scores x 100 below):
    #   task a: A 60, B 70, C 80 -> mean 70, pstdev sqrt(200/3) = 8.16497 -> z = -1.22474, 0, +1.22474
    #   task b: A 50, B 50, C 90 -> mean 63.333, pstdev 18.8562     -> z = -0.70711, -0.70711, +1.41421
    # all z: min -1.22474, max +1.41421, range 2.63896 -> S = 100 (z - min) / range:
    #   A: a 0.0,     b 19.6152 -> mean  9.8076, pstdev  9.8076
    #   B: a 46.4102, b 19.6152 -> mean 33.0127, pstdev 13.3975
    #   C: a 92.8203, b 100.0   -> mean 96.4102, pstdev  3.5898
    runs = [Run("a", "A", "off", "0", 0.6), Run("a", "B", "off", "0", 0.7), Run("a", "C", "off", "0", 0.8),
            Run("b", "A", "off", "0", 0.5), Run("b", "B", "off", "0", 0.5), Run("b", "C", "off", "0", 0.9)]
    scores = standardized(table1(runs))
    expected = {"A": (9.8076, 9.8076), "B": (33.0127, 13.3975), "C": (96.4102, 3.5898)}
    for row, (mean, std) in expected.items():
        assert scores[(row, "off")] == (pytest.approx(mean, abs=1e-3), pytest.approx(std, abs=1e-3))


def test_table1_average_is_the_mean_of_cell_means_and_ties_standardize_to_the_middle() -> None:
    runs = [Run("a", "A", "off", "0", 0.5), Run("a", "A", "off", "1", 0.7), Run("b", "A", "off", "0", 0.9)]
    t = table1(runs)
    assert t.cells[("A", "off", "a")] == (pytest.approx(60.0), pytest.approx(statistics.stdev([50, 70])), 2)
    assert t.cells[("A", "off", "b")] == (pytest.approx(90.0), 0.0, 1)
    assert t.average[("A", "off")] == pytest.approx(75.0)
    assert standardized(t) == {("A", "off"): (50.0, 0.0)}


def _publish(reg: Registry, task: str, method: str, seed: int, metrics: dict, **state) -> None:
    meta = ArtifactMeta(task=task, method=method, backbone="google/t5-small-lm-adapt", fingerprint=FINGERPRINT,
                        d_model=8, n_tokens=2, metrics={"test": metrics},
                        task_spec={"metrics": sorted(metrics)}, seed=seed)
    art = Artifact(prompt=torch.randn(2, 8, generator=torch.Generator().manual_seed(seed)), meta=meta, state=state)
    tags = {"sweep": "fix", "task": task, "method": method, "dropout": "off", "seed": str(seed)}
    reg.publish(art, tags=tags)


def test_report_cells_are_the_mean_of_the_seeds_registry_metrics(tmp_path) -> None:
    reg = Registry(tmp_path / "reg")
    gen = torch.Generator().manual_seed(0)
    p = {task: torch.randn(2, 4, generator=gen) for task in ("mrpc", "cb")}
    values = {("mrpc", 0): {"accuracy": 0.8, "f1": 0.9}, ("mrpc", 1): {"accuracy": 0.7, "f1": 0.85},
              ("cb", 0): {"accuracy": 0.6}, ("cb", 1): {"accuracy": 0.75}}
    for (task, seed), metrics in values.items():
        _publish(reg, task, "superpos", seed, metrics, p_prime=p[task] + seed)
        _publish(reg, task, "simple", seed, {k: v - 0.1 for k, v in metrics.items()})
    result = CliRunner().invoke(app, ["report", "fix", "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "r"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {(r["method"], r["dropout"]): r for r in report["table1"]["rows"]}
    mrpc = [100 * statistics.fmean(values[("mrpc", s)].values()) for s in (0, 1)]  # two-metric task: their mean
    cell = rows[("superpos", "off")]["cells"]["mrpc"]
    assert cell["mean"] == pytest.approx(statistics.fmean(mrpc)) and cell["seeds"] == 2
    assert cell["std"] == pytest.approx(statistics.stdev(mrpc))
    cb = rows[("simple", "off")]["cells"]["cb"]
    assert cb["mean"] == pytest.approx(100 * statistics.fmean([0.5, 0.65]))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| superpos (paper) | off |" in md and "70.2" in md  # the paper's average beside ours (t5-small)
    sim = report["superpos_similarity"]
    cos = [float(torch.nn.functional.cosine_similarity((p["cb"] + s).flatten(), (p["mrpc"] + s).flatten(), dim=0))
           for s in (0, 1)]
    assert sim["tasks"] == ["cb", "mrpc"] and sim["matrix"][0][0] == pytest.approx(1.0)
    assert sim["matrix"][0][1] == sim["matrix"][1][0] == pytest.approx(statistics.fmean(cos))
    assert report["figures"] == ["superpos-similarity.png"]  # no storage: no curves, p' similarity only
    assert (tmp_path / "r" / "superpos-similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_nothing_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["report", "nosuch", "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no published versions with tags {'sweep': 'nosuch'}" in " ".join(result.output.split())
