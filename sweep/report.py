"""`spp report`: published runs -> report.md, report.json and PNG figures.

Runs are the registry versions matching some tags (a sweep's ``sweep`` tag, or any
``--tags``); each carries its cell in its tags (task, method, dropout, seed, as `spp sweep`
publishes them) and its metrics in its artifact. Figures:

- ``curves-<task>.png``: validation score vs step, one line per method x dropout (mean over
  seeds), from the trials' metrics.jsonl in the sweep's storage path;
- ``ept-prompt-norm.png``: EPT's mu_t, the mean L2 norm of the prompt tokens per step;
- ``superpos-similarity.png``: SuperPos-Prompt's Figure 2(d), the cosine similarity of the
  learned superposition weights p' (flattened n x m) between tasks, averaged over seeds (runs
  of one seed share E_freeze, so their p' live in the same coordinates).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from spp.prompts.errors import SppError
from spp.prompts.tasks.spec import main_score
from spp.sweep.tables import Run, markdown_standardized, markdown_table1, standardized, table1

CELL_TAGS = ("task", "method", "dropout", "seed")


class ReportError(SppError):
    """Nothing to report, or runs that lack the tags of a cell (one line)."""


@dataclass
class RunInfo:
    run: Run
    method: str  # the method's registry name (the tag may be a label such as ept*)
    backbone: str
    trial: str | None
    metric_names: tuple[str, ...]
    p_prime: Any = None  # (n, m) tensor for superpos runs


def collect(registry: Any, tags: Mapping[str, str]) -> list[RunInfo]:
    """The runs of ``tags``: each version's cell (tags), test score (else validation) and p'."""
    versions = registry.list(tags=dict(tags))
    if not versions:
        raise ReportError(f"no published versions with tags {dict(tags)}")
    runs = []
    for v in versions:
        missing = [k for k in CELL_TAGS if k not in v.tags]
        if missing:
            raise ReportError(f"{v.ref} lacks the tag(s) {', '.join(missing)} that place it in the table")
        _, art = registry.load(v)
        names = tuple(art.meta.task_spec.get("metrics", ())) or None
        split = "test" if "test" in art.meta.metrics else "validation"
        score = main_score(art.meta.metrics.get(split, {}), names)
        run = Run(task=v.tags["task"], method=v.tags["method"], dropout=v.tags["dropout"], seed=v.tags["seed"],
                  score=score, ref=v.ref)
        runs.append(RunInfo(run=run, method=art.meta.method, backbone=art.meta.backbone, trial=v.tags.get("trial"),
                            metric_names=names or (), p_prime=art.state.get("p_prime")))
    return runs


def paper_numbers(backbones: set[str]) -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, Any]]:
    """The papers' numbers for the one backbone of the report, keyed (method, dropout)."""
    data = json.loads(resources.files("spp.sweep").joinpath("data/paper_numbers.json").read_text())
    if len(backbones) != 1:
        return {}, data
    table = data["backbones"].get(next(iter(backbones)), {})
    return {tuple(k.split("|")): v for k, v in table.items()}, data  # type: ignore[misc]


def write_report(registry: Any, tags: Mapping[str, str], out: str | Path, *, storage: str | Path | None = None) -> dict:
    """Write report.md, report.json and the PNGs to ``out``; return what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    infos = collect(registry, tags)
    t1 = table1([i.run for i in infos])
    std = standardized(t1)
    backbones = {i.backbone for i in infos}
    paper, paper_data = paper_numbers(backbones)
    folder = _storage(storage, tags)
    curves = _curves(infos, folder) if folder else {}
    sim = superpos_similarity(infos)
    figures = _figures(infos, t1, curves, sim, out)
    table_md = markdown_table1(t1, paper)
    summary = {
        "tags": dict(tags), "backbones": sorted(backbones), "runs": [vars(i.run) for i in infos],
        "table1": t1.to_dict(),
        "standardized": [{"method": m, "dropout": d, "mean": v[0], "std": v[1]} for (m, d), v in std.items()],
        "paper": {"source": paper_data["source"], "status": paper_data["status"],
                  "rows": {f"{m}|{d}": v for (m, d), v in paper.items()}},
        "superpos_similarity": sim, "figures": figures, "storage": str(folder) if folder else None,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    (out / "report.md").write_text(_markdown(summary, table_md, markdown_standardized(std), figures))
    return {"summary": summary, "markdown_table": table_md}


def _storage(storage: str | Path | None, tags: Mapping[str, str]) -> Path | None:
    if storage:
        return Path(storage)
    default = Path("spp-sweeps") / tags.get("sweep", "")
    return default if "sweep" in tags and (default / "trials").is_dir() else None


def _curves(infos: list[RunInfo], storage: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{trial: {"score": [(step, score x 100)], "norm": [(step, mu_t)]}} from metrics.jsonl."""
    out = {}
    for info in infos:
        path = storage / "trials" / str(info.trial) / "metrics.jsonl"
        if not info.trial or not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        steps = [r for r in rows if "loss" in r]
        out[info.trial] = {
            "score": [(r["step"], 100 * main_score(r["validation"], info.metric_names or None))
                      for r in steps if "validation" in r],
            "norm": [(r["step"], r["prompt_norm"]) for r in steps if "prompt_norm" in r],
        }
    return out


def _mean_curve(series: list[list[tuple[int, float]]]) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for s in series:
        for step, value in s:
            by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def _figures(infos: list[RunInfo], t1: Any, curves: dict, sim: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task in t1.tasks:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, d in t1.rows:
            series = [curves[i.trial]["score"] for i in infos
                      if i.trial in curves and (i.run.task, i.run.method, i.run.dropout) == (task, m, d)]
            if any(series):
                ax.plot(*_mean_curve(series), marker="o", label=f"{m} (dropout {d})")
        if ax.lines:
            _save(fig, ax, f"{task}: validation score vs step", "step", "score x 100", out / f"curves-{task}.png")
            written.append(f"curves-{task}.png")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for task in t1.tasks:
        series = [curves[i.trial]["norm"] for i in infos if i.method == "ept" and i.run.task == task and i.trial in curves]
        if any(series):
            ax.plot(*_mean_curve(series), label=task)
    if ax.lines:
        _save(fig, ax, "EPT prompt norm mu_t", "step", "mean L2 norm of prompt tokens", out / "ept-prompt-norm.png")
        written.append("ept-prompt-norm.png")
    plt.close(fig)
    if sim:
        _heatmap(sim, out / "superpos-similarity.png")
        written.append("superpos-similarity.png")
    return written


def superpos_similarity(infos: list[RunInfo]) -> dict[str, Any]:
    """Cosine similarity of flattened p' between tasks, averaged over seeds (same seed, same
    E_freeze; runs are compared only within one method label, dropout and seed)."""
    import torch

    groups: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(dict)
    for i in infos:
        if i.method == "superpos" and i.p_prime is not None:
            groups[(i.run.method, i.run.dropout, i.run.seed)][i.run.task] = i.p_prime.flatten().float()
    tasks = sorted({t for g in groups.values() for t in g})
    if len(tasks) < 2:
        return {}
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for g in groups.values():
        for a in g:
            for b in g:
                if g[a].shape == g[b].shape:
                    sums[(a, b)].append(float(torch.nn.functional.cosine_similarity(g[a], g[b], dim=0)))
    matrix = [[statistics.fmean(sums[(a, b)]) if sums[(a, b)] else float("nan") for b in tasks] for a in tasks]
    return {"tasks": tasks, "matrix": matrix}


def _heatmap(sim: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    tasks, matrix = sim["tasks"], sim["matrix"]
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 3, 1.2 * len(tasks) + 2))
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for r, row in enumerate(matrix):
        for c, value in enumerate(row):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title("SuperPos-Prompt: cosine similarity\nof p' across tasks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str, path: Path) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _markdown(summary: dict, table_md: str, std_md: str, figures: list[str]) -> str:
    from spp.sweep import tables

    lines = [f"# Report: {', '.join(f'{k}={v}' for k, v in summary['tags'].items())}", "",
             f"Backbone(s): {', '.join(summary['backbones'])}; {len(summary['runs'])} runs.", "",
             "## Table 1: mean ± std over seeds (task metric x 100; two-metric tasks as their mean)", "", table_md, "",
             f"Paper numbers: {summary['paper']['source']}. {summary['paper']['status']}", "",
             "## Table 2: standardized overall scoring", "", std_md, "",
             "Formula (see spp.sweep.tables):", "", tables.__doc__.split("Table 2,", 1)[1].strip(), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
