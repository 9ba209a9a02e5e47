"""Writing a transfer result: transfer.json (+ its JSON Schema), transfer.csv, report.md, heatmap.png.

``transfer.json`` (schema_version 1; the full JSON Schema is :data:`TRANSFER_SCHEMA`, written
next to it as ``transfer.schema.json``). Matrices are lists of rows: ``[source][target]``
for scores, ``[source][source]`` for similarities, in the order of ``sources`` / ``targets``.

* ``backbone``: name, fingerprint, d_model of the frozen T5 every prompt was scored on.
* ``sources[]``: label (unique), ref (registry reference or file), task, method, n_tokens.
* ``targets[]``: task, split, n_examples, metrics (names), label_words, own_source (label of
  the target's own prompt or null), own_score, relative_note (why ``relative`` is null).
* ``raw``: main score (mean of the task's metrics); ``metrics``: every metric per cell.
* ``relative``: raw / own_score per target column (own cell exactly 1.0); null columns where
  the target has no own prompt or its own prompt scores <= 0.
* ``similarity``: ``mean_cosine`` and ``token_cosine`` (SPoT; see spp.prompts.transfer).
* ``correlation``: per similarity, Spearman/Pearson (and p-values) of sim(source, target's own
  prompt) against relative transfer, over ``n_pairs`` cross-task pairs; null with a ``note``
  when undefined.
* ``top_k``: k and, per target, the best sources from other tasks by raw score.
* ``timing``: seconds of scoring, rows ((example, prompt) pairs) and rows per second.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spp.prompts.artifact import spp_version
from spp.prompts.transfer.compute import SIMILARITIES, TransferError, TransferResult

SCHEMA_VERSION = 1
CMAP = "viridis"

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_MATRIX = {"type": "array", "items": {"type": "array", "items": _NUM}}
_CORR = {
    "type": "object",
    "required": ["n_pairs", "spearman", "spearman_p", "pearson", "pearson_p", "note"],
    "additionalProperties": False,
    "properties": {"n_pairs": {"type": "integer", "minimum": 0}, "spearman": _NUM_OR_NULL, "spearman_p": _NUM_OR_NULL,
                   "pearson": _NUM_OR_NULL, "pearson_p": _NUM_OR_NULL, "note": _STR_OR_NULL},
}
TRANSFER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "spp transfer matrix",
    "type": "object",
    "required": ["schema_version", "created_at", "spp_version", "backbone", "sources", "targets", "raw", "metrics",
                 "relative", "similarity", "correlation", "top_k", "timing"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "created_at": {"type": "string"},
        "spp_version": {"type": "string"},
        "backbone": {"type": "object", "required": ["name", "fingerprint", "d_model"],
                     "properties": {"name": {"type": "string"}, "fingerprint": {"type": "string"},
                                    "d_model": {"type": "integer"}}},
        "sources": {"type": "array", "minItems": 2, "items": {
            "type": "object", "required": ["label", "ref", "task", "method", "n_tokens"],
            "properties": {"label": {"type": "string"}, "ref": {"type": "string"}, "task": {"type": "string"},
                           "method": {"type": "string"}, "n_tokens": {"type": "integer", "minimum": 1}}}},
        "targets": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["task", "split", "n_examples", "metrics", "label_words", "own_source", "own_score",
                         "relative_note"],
            "properties": {"task": {"type": "string"}, "split": {"type": "string"},
                           "n_examples": {"type": "integer", "minimum": 1},
                           "metrics": {"type": "array", "items": {"type": "string"}},
                           "label_words": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                           "own_source": _STR_OR_NULL, "own_score": _NUM_OR_NULL, "relative_note": _STR_OR_NULL}}},
        "raw": _MATRIX,
        "metrics": {"type": "array", "items": {"type": "array", "items": {
            "type": "object", "additionalProperties": _NUM}}},
        "relative": {"type": "array", "items": {"type": "array", "items": _NUM_OR_NULL}},
        "similarity": {"type": "object", "required": list(SIMILARITIES),
                       "properties": {name: _MATRIX for name in SIMILARITIES}},
        "correlation": {"type": "object", "required": list(SIMILARITIES),
                        "properties": {name: _CORR for name in SIMILARITIES}},
        "top_k": {"type": "object", "required": ["k", "by_target"], "properties": {
            "k": {"type": "integer", "minimum": 1},
            "by_target": {"type": "object", "additionalProperties": {"type": "array", "items": {
                "type": "object", "required": ["source", "raw", "relative"],
                "properties": {"source": {"type": "string"}, "raw": _NUM, "relative": _NUM_OR_NULL}}}}}},
        "timing": {"type": "object", "required": ["seconds", "rows", "rows_per_second"],
                   "properties": {"seconds": _NUM, "rows": {"type": "integer"}, "rows_per_second": _NUM}},
    },
}


def to_json_dict(result: TransferResult, *, top_k: int = 3) -> dict[str, Any]:
    """The documented ``transfer.json`` content (schema_version 1)."""
    labels = result.source_labels
    targets = []
    for j, t in enumerate(result.targets):
        o = result.own[j]
        targets.append({
            "task": t.task.name, "split": t.split, "n_examples": len(t), "metrics": list(t.task.metrics),
            "label_words": list(t.task.label_words), "own_source": labels[o] if o is not None else None,
            "own_score": result.raw[o][j] if o is not None else None, "relative_note": result.notes[j],
        })
    by_target = {
        t.task.name: [{"source": labels[i], "raw": result.raw[i][j], "relative": result.relative[i][j]}
                      for i in result.top_k[j]]
        for j, t in enumerate(result.targets)
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spp_version": spp_version(),
        "backbone": dict(result.backbone),
        "sources": [{"label": s.label, "ref": s.ref, "task": s.task, "method": s.artifact.meta.method,
                     "n_tokens": s.artifact.meta.n_tokens} for s in result.sources],
        "targets": targets,
        "raw": result.raw,
        "metrics": result.metrics,
        "relative": result.relative,
        "similarity": result.similarity,
        "correlation": {name: vars(c) for name, c in result.correlation.items()},
        "top_k": {"k": top_k, "by_target": by_target},
        "timing": {"seconds": result.seconds, "rows": result.rows,
                   "rows_per_second": result.rows / result.seconds if result.seconds > 0 else 0.0},
    }


def validate(doc: dict[str, Any]) -> None:
    """Check ``doc`` against TRANSFER_SCHEMA (jsonschema when installed, else a hand check)."""
    try:
        import jsonschema
    except ImportError:
        _hand_check(doc)
        return
    try:
        jsonschema.validate(doc, TRANSFER_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise TransferError(f"transfer.json does not match its schema at {where}: {exc.message}") from None
    _hand_check(doc)  # shapes across fields, which JSON Schema cannot express


def _hand_check(doc: dict[str, Any]) -> None:
    missing = [k for k in TRANSFER_SCHEMA["required"] if k not in doc]
    if missing:
        raise TransferError(f"transfer.json lacks {', '.join(missing)}")
    S, T = len(doc["sources"]), len(doc["targets"])
    shapes = {"raw": (S, T), "metrics": (S, T), "relative": (S, T)}
    shapes |= {f"similarity.{n}": (S, S) for n in SIMILARITIES}
    for key, (rows, cols) in shapes.items():
        value = doc[key] if "." not in key else doc["similarity"][key.split(".")[1]]
        if len(value) != rows or any(len(r) != cols for r in value):
            raise TransferError(f"transfer.json: {key} must be {rows} x {cols}")
    for j, t in enumerate(doc["targets"]):
        if t["own_source"] is not None and t["relative_note"] is None:
            i = [s["label"] for s in doc["sources"]].index(t["own_source"])
            if doc["relative"][i][j] != 1.0:
                raise TransferError(f"transfer.json: relative[{i}][{j}] (own prompt of {t['task']}) must be 1.0")


def write_report(result: TransferResult, out: str | Path, *, top_k: int = 3) -> dict[str, Path]:
    """Write the four outputs (and the schema) into ``out``; returns name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = to_json_dict(result, top_k=top_k)
    validate(doc)
    paths = {name: out / name for name in
             ("transfer.json", "transfer.schema.json", "transfer.csv", "report.md", "heatmap.png")}
    paths["transfer.json"].write_text(json.dumps(doc, indent=2) + "\n")
    paths["transfer.schema.json"].write_text(json.dumps(TRANSFER_SCHEMA, indent=2) + "\n")
    write_csv(result, paths["transfer.csv"])
    paths["report.md"].write_text(markdown_report(result, doc))
    write_heatmap(result, paths["heatmap.png"])
    return paths


def write_csv(result: TransferResult, path: Path) -> None:
    """One row per (source, target): scores, relative, own flag and every metric of the target."""
    names = sorted({m for row in result.metrics for cell in row for m in cell})
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "source_task", "target", "score", "relative", "own_prompt", *names])
        for i, s in enumerate(result.sources):
            for j, t in enumerate(result.targets):
                rel = result.relative[i][j]
                cell = result.metrics[i][j]
                w.writerow([s.label, s.task, t.task.name, _fmt(result.raw[i][j]), "" if rel is None else _fmt(rel),
                            int(result.own[j] == i), *[_fmt(cell[m]) if m in cell else "" for m in names]])


def _fmt(x: float) -> str:
    return repr(float(x))  # shortest round-trip text


def markdown_report(result: TransferResult, doc: dict[str, Any]) -> str:
    labels, tasks = result.source_labels, result.target_names
    lines = [
        "# Zero-shot cross-task transfer", "",
        f"Backbone `{result.backbone.get('name')}` ({str(result.backbone.get('fingerprint'))[:19]}...), "
        f"{len(labels)} source prompts x {len(tasks)} target tasks, "
        f"{result.rows} scored (example, prompt) pairs in {result.seconds:.1f} s.", "",
        "Targets: " + ", ".join(f"`{t.task.name}` ({t.split}, {len(t)} examples, "
                                f"{' + '.join(t.task.metrics)})" for t in result.targets), "",
        "## Raw main score (rows: source prompt, columns: target task)", "",
        *_md_matrix(labels, tasks, result.raw), "",
        "## Relative transfer (share of the target's own prompt score; own prompt = 1.00)", "",
        *_md_matrix(labels, tasks, result.relative), "",
    ]
    notes = [f"- `{t}`: {n}" for t, n in zip(tasks, result.notes) if n]
    if notes:
        lines += ["Relative transfer is undefined for:", *notes, ""]
    lines += ["## Best sources per target (other tasks only)", ""]
    for j, t in enumerate(tasks):
        best = [f"{labels[i]} ({result.raw[i][j]:.3f})" for i in result.top_k[j]]
        lines.append(f"- `{t}`: {', '.join(best) or 'no prompt from another task'}")
    lines += ["", "## Prompt similarity (SPoT) against transfer", "",
              "| similarity | pairs | Spearman | p | Pearson | p | note |", "|---|---|---|---|---|---|---|"]
    for name, c in result.correlation.items():
        lines.append(f"| {name} | {c.n_pairs} | {_cell(c.spearman)} | {_cell(c.spearman_p)} | {_cell(c.pearson)} "
                     f"| {_cell(c.pearson_p)} | {c.note or ''} |")
    lines += ["", "mean_cosine: cosine of the mean prompt tokens. token_cosine: mean cosine over all token pairs. "
              "Pairs: (source, target) with source from another task; x = similarity of the source to the target's "
              "own prompt, y = relative transfer.", "", "![transfer heatmap](heatmap.png)", ""]
    return "\n".join(lines)


def _md_matrix(rows: list[str], cols: list[str], values: list[list[float | None]]) -> list[str]:
    out = ["| source \\ target | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    out += [f"| {r} | " + " | ".join(_cell(v) for v in row) + " |" for r, row in zip(rows, values)]
    return out


def _cell(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


# ------------------------------------------------------------------------------ heatmap
def heatmap_figure(result: TransferResult):
    """Raw scores as an annotated (sources x targets) image: one cell per (source, target).

    Cell text: the raw score and, where defined, the relative share; own prompts are outlined.
    Drawn with the Agg backend (no display needed); the caller closes the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    S, T = len(result.sources), len(result.targets)
    label_width = 0.08 * max(len(x) for x in result.source_labels)  # inches for the y tick labels
    fig = Figure(figsize=(max(5.0, 2.4 + label_width + 1.0 * T), 1.8 + 0.6 * S), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display, and fig.canvas.draw() lays the figure out
    ax = fig.add_subplot()
    vmin, vmax = heatmap_range(result)
    image = ax.imshow(result.raw, cmap=CMAP, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    for i in range(S):
        for j in range(T):
            rel = result.relative[i][j]
            text = f"{result.raw[i][j]:.2f}" + (f"\n({rel:.0%})" if rel is not None else "")
            shade = (result.raw[i][j] - vmin) / (vmax - vmin)
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if shade > 0.6 else "white")
    for j, o in enumerate(result.own):
        if o is not None:
            ax.add_patch(Rectangle((j - 0.5, o - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(T), result.target_names, rotation=30, ha="right")
    ax.set_yticks(range(S), result.source_labels)
    ax.set_xlabel("target task")
    ax.set_ylabel("source prompt")
    ax.set_title("zero-shot transfer\nmain score (share of the target's own prompt)", fontsize=10)
    fig.colorbar(image, ax=ax, label="main score")
    return fig


def heatmap_range(result: TransferResult) -> tuple[float, float]:
    """Colour range: [0, 1] widened to the data (MCC can be negative, STS-B Pearson too)."""
    values = [v for row in result.raw for v in row]
    vmin, vmax = min(0.0, *values), max(1.0, *values)
    return vmin, vmax


def write_heatmap(result: TransferResult, path: str | Path) -> Path:
    fig = heatmap_figure(result)
    fig.savefig(path, dpi=100)  # no bbox="tight": cell positions stay those of the figure
    return Path(path)
