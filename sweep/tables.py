"""The papers' tables as plain computations over runs (no registry, no plotting).

Table 1 (SuperPos-Prompt / EPT style): rows method x dropout, columns tasks; a cell is the
mean ± sample standard deviation (ddof=1; 0 for a single seed) over seeds of the task's paper
metric x 100 (THE main score: the mean of the task's metrics); the row average is the mean of
its cell means, as the papers' "Avg." column (it re-derives the SuperPos-Prompt paper's
averages, e.g. SuperPos without dropout on T5v1.1-small: 70.2).

Table 2, "standardized overall scoring" (the SuperPos-Prompt paper cites KoLA, Yu et al. 2023).
The paper's own numbers cannot be re-derived from its Table 1 with a per-task min-max or
z-score scaling, so spp documents its choice, KoLA's two steps:

1. per task t, the z-score of each row r over the rows of the table (population std, ddof=0):
   z[r, t] = (s[r, t] - mean_r s[., t]) / std_r s[., t]   (0 when every row ties on t);
2. one min-max rescaling of ALL z-scores of the table to [0, 100]:
   S[r, t] = 100 (z[r, t] - min z) / (max z - min z)      (50 when every z is equal);

and a row's standardized score is mean ± std (ddof=0) of S[r, .] over the tasks it has. The
global (not per-task) min-max in step 2 keeps the per-task spread that z-scoring measured.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Run:
    """One published trial: its cell and its score (the task's main score, 0..1)."""

    task: str
    method: str
    dropout: str
    seed: str
    score: float
    ref: str = ""


@dataclass
class Table1:
    tasks: list[str]
    rows: list[tuple[str, str]]  # (method label, dropout)
    cells: dict[tuple[str, str, str], tuple[float, float, int]] = field(default_factory=dict)  # (m, d, task)
    average: dict[tuple[str, str], float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "tasks": self.tasks,
            "rows": [{"method": m, "dropout": d, "average": self.average.get((m, d)),
                      "cells": {t: _cell_dict(self.cells.get((m, d, t))) for t in self.tasks}}
                     for m, d in self.rows],
        }


def _cell_dict(cell: tuple[float, float, int] | None) -> dict | None:
    return None if cell is None else {"mean": cell[0], "std": cell[1], "seeds": cell[2]}


def table1(runs: Sequence[Run]) -> Table1:
    """Mean ± std over seeds per (method, dropout, task), scores x 100, and row averages."""
    tasks = sorted({r.task for r in runs})
    rows = sorted({(r.method, r.dropout) for r in runs})
    table = Table1(tasks=tasks, rows=rows)
    for m, d in rows:
        for t in tasks:
            values = [100 * r.score for r in runs if (r.method, r.dropout, r.task) == (m, d, t) and math.isfinite(r.score)]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                table.cells[(m, d, t)] = (statistics.fmean(values), std, len(values))
        means = [table.cells[(m, d, t)][0] for t in tasks if (m, d, t) in table.cells]
        if means:
            table.average[(m, d)] = statistics.fmean(means)
    return table


def standardized(table: Table1) -> dict[tuple[str, str], tuple[float, float]]:
    """KoLA-style standardized overall score per row: (mean, std) over tasks (see module doc)."""
    z: dict[tuple[str, str, str], float] = {}
    for t in table.tasks:
        present = [(m, d) for m, d in table.rows if (m, d, t) in table.cells]
        values = [table.cells[(m, d, t)][0] for m, d in present]
        if not values:
            continue
        mu, sigma = statistics.fmean(values), statistics.pstdev(values)
        for (m, d), v in zip(present, values):
            z[(m, d, t)] = (v - mu) / sigma if sigma > 0 else 0.0
    if not z:
        return {}
    lo, hi = min(z.values()), max(z.values())
    scaled = {k: 100 * (v - lo) / (hi - lo) if hi > lo else 50.0 for k, v in z.items()}
    out = {}
    for m, d in table.rows:
        values = [scaled[(m, d, t)] for t in table.tasks if (m, d, t) in scaled]
        if values:
            out[(m, d)] = (statistics.fmean(values), statistics.pstdev(values))
    return out


def markdown_table1(table: Table1, paper: dict[tuple[str, str], dict[str, float]] | None = None) -> str:
    """Table 1 as Markdown; with ``paper``, a row of the paper's numbers under each of ours."""
    head = "| method | dropout | " + " | ".join(table.tasks) + " | average |"
    lines = [head, "|" + "---|" * (len(table.tasks) + 3)]
    for m, d in table.rows:
        cells = [_fmt(table.cells.get((m, d, t))) for t in table.tasks]
        avg = table.average.get((m, d))
        lines.append(f"| {m} | {d} | " + " | ".join(cells) + f" | {'' if avg is None else f'{avg:.1f}'} |")
        theirs = (paper or {}).get((m, d))
        if theirs:
            cells = [_paper_cell(theirs.get(t), table.cells.get((m, d, t), (None,))[0]) for t in table.tasks]
            lines.append(f"| {m} (paper) | {d} | " + " | ".join(cells)
                         + f" | {_paper_cell(theirs.get('average'), avg)} |")
    return "\n".join(lines)


def markdown_standardized(scores: dict[tuple[str, str], tuple[float, float]]) -> str:
    lines = ["| method | dropout | standardized score (mean ± std over tasks) |", "|---|---|---|"]
    for (m, d), (mean, std) in sorted(scores.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {m} | {d} | {mean:.1f} ± {std:.1f} |")
    return "\n".join(lines)


def _fmt(cell: tuple[float, float, int] | None) -> str:
    return "" if cell is None else f"{cell[0]:.1f} ± {cell[1]:.1f}"


def _paper_cell(value: float | None, ours: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" + ("" if ours is None else f" (ours {ours - value:+.1f})")
