"""Zero-shot cross-task transfer: every source prompt scored on every target task.

The matrix follows EPT and SPoT (Vu et al., ACL 2022, arXiv:2110.07904): the prompt of task A
is evaluated on task B with B's template and label words, and reported both as B's raw main
score and as a share of the score of B's *own* prompt (the source whose ``meta.task`` is B;
that cell is exactly 1.0). Prompt similarities (SPoT section 5) are in
:mod:`spp.prompts.transfer.similarity`.

Scoring mixes prompts inside one batch through :meth:`Scorer.score`, the server's scorer:
rows are (example, source) pairs, example-major over the length-sorted examples, so the S rows
of one example (same length, no padding between them) sit side by side. The backbone is never
reloaded per prompt. Rank classification only: free generation cannot mix prompts per row.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from spp.prompts.artifact import Artifact
from spp.prompts.backbone import Backbone
from spp.prompts.config import check_bool, check_int, check_shards
from spp.prompts.tasks.catalog import get_task, task_names
from spp.prompts.tasks.data import SplitNotFoundError, TaskData, load_split
from spp.prompts.errors import SppError
from spp.prompts.tasks.metrics import compute_metrics
from spp.prompts.tasks.spec import main_score
from spp.prompts.parallel import ShardedScore
from spp.prompts.scoring import LabelSet, Scorer, ScoreFn, iter_batches
from spp.prompts.transfer.similarity import SIMILARITIES, similarity_matrices
from spp.prompts.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class TransferError(SppError):
    """Inputs that cannot form a transfer matrix (too few prompts, mixed backbones, no data)."""


@dataclass(frozen=True)
class TransferSource:
    """One source prompt: a unique display ``label`` (e.g. ``rte@3``) and where it came from."""

    label: str
    artifact: Artifact
    ref: str = ""

    @property
    def task(self) -> str:
        return self.artifact.meta.task

    @property
    def prompt(self) -> torch.Tensor:
        return self.artifact.prompt  # (n, e)


# Matrices of at least this many (example, prompt) rows compile by default. On 2 AMD EPYC vCPUs
# (bf16, 2 shards, RTE, a 4x4 matrix of 64 examples per target, 6 interleaved pairs) compiled
# scoring ran 54.3 -> 61.2 rows/s, faster in every pair: ~2 ms saved per row, while compiling
# costs ~4 s with Inductor's on-disk cache warm and ~19 s cold. 8,000 rows repay a cold compile.
AUTO_COMPILE_ROWS = 8000


@dataclass(frozen=True)
class TransferConfig:
    """batch_size: (example, prompt) rows per forward pass; top_k: sources listed per target;
    compile: score through torch.compile (spp.prompts.compiled); None: where the forwards run
    unpadded (a T5 on a CPU), for matrices of at least :data:`AUTO_COMPILE_ROWS` rows;
    shards: each batch scored as this many shards at once on threads that split the CPU
    (spp.prompts.parallel; None: 2 on a CPU, 1 on a GPU)."""

    batch_size: int = 64
    top_k: int = 3
    max_source_length: int = 512
    compile: bool | None = None
    shards: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "top_k", "max_source_length"):
            check_int(name, getattr(self, name), TransferError)
        if self.compile is not None:
            check_bool("compile", self.compile, TransferError)
        check_shards(self.shards, TransferError)

    def compiles(self, rows: int) -> bool | None:
        """The Scorer's ``compile`` for a matrix of ``rows`` (example, prompt) rows."""
        if self.compile is None:
            return None if rows >= AUTO_COMPILE_ROWS else False
        return self.compile


@dataclass
class Correlation:
    """Spearman and Pearson of a similarity against relative transfer over ``n_pairs`` pairs."""

    n_pairs: int
    spearman: float | None = None
    spearman_p: float | None = None
    pearson: float | None = None
    pearson_p: float | None = None
    note: str | None = None


@dataclass
class TransferResult:
    """Everything the report needs. Matrices are indexed [source][target] or [source][source]."""

    sources: list[TransferSource]
    targets: list[TaskData]
    metrics: list[list[dict[str, float]]]  # (S, T) full metric dicts
    raw: list[list[float]]  # (S, T) main score
    relative: list[list[float | None]]  # (S, T) share of the target's own score
    own: list[int | None]  # per target: index of its own source
    notes: list[str | None]  # per target: why relative is null
    similarity: dict[str, list[list[float]]]  # name -> (S, S)
    correlation: dict[str, Correlation]
    top_k: list[list[int]]  # per target: source indices, best first
    backbone: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    rows: int = 0

    @property
    def target_names(self) -> list[str]:
        return [t.task.name for t in self.targets]

    @property
    def source_labels(self) -> list[str]:
        return [s.label for s in self.sources]


# ------------------------------------------------------------------------------ validation
def check_sources(sources: Sequence[TransferSource], backbone: Backbone | None = None, *, minimum: int = 2) -> None:
    """At least ``minimum`` prompts, unique labels, one backbone (fingerprint) for all of them."""
    if len(sources) < minimum:
        got = ", ".join(s.label for s in sources) or "none"
        raise TransferError(f"a transfer matrix needs at least {minimum} source prompts, got {len(sources)} ({got})")
    labels = [s.label for s in sources]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise TransferError(f"source labels must be unique; repeated: {', '.join(dupes)}")
    groups: dict[str, list[TransferSource]] = {}
    for s in sources:
        groups.setdefault(s.artifact.meta.fingerprint, []).append(s)
    if len(groups) > 1:
        parts = [
            f"{', '.join(s.label for s in group)} (backbone {group[0].artifact.meta.backbone}, {fp[:19]}...)"
            for fp, group in groups.items()
        ]
        raise TransferError("prompts come from different backbones: " + " vs ".join(parts) + "; run one transfer per backbone")
    if backbone is not None:
        for s in sources:
            backbone.check_prompt(s.artifact.meta.fingerprint, s.artifact.meta.d_model, what=f"prompt {s.label}")


def _check_targets(targets: Sequence[TaskData]) -> None:
    if not targets:
        raise TransferError("no target tasks to evaluate on")
    names = [t.task.name for t in targets]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise TransferError(f"target tasks must be unique; repeated: {', '.join(dupes)}")
    for t in targets:
        if len(t) == 0 or not t.has_labels:
            raise TransferError(f"task {t.task.name}: the {t.split} split has no labeled examples to evaluate on")


# ------------------------------------------------------------------------------ targets
def resolve_task(name: str, sources: Sequence[TransferSource] = ()) -> TaskSpec:
    """A built-in task, a .json/.toml spec file, or the spec recorded in a source artifact."""
    if name.lower().endswith((".json", ".toml")) or name.strip().lower().replace("-", "") in task_names():
        return get_task(name)
    for s in sources:
        if s.task == name and s.artifact.meta.task_spec:
            return TaskSpec.from_dict(s.artifact.meta.task_spec)
    return get_task(name)  # raises the catalogue's "unknown task" message


def load_target(
    spec: TaskSpec, split: str, *, data_dir: str | Path | None = None, max_examples: int | None = None, seed: int = 0
) -> TaskData:
    """The evaluation split of one target; ``data_dir/<task>/`` is used when it exists.

    A missing or unlabeled split raises a TransferError that names the task.
    """
    folder = None
    if data_dir is not None:
        sub = Path(data_dir) / spec.name
        folder = sub if sub.is_dir() else Path(data_dir)
    try:
        data = load_split(spec, split, data_dir=folder, max_samples=max_examples, seed=seed)
    except SplitNotFoundError as exc:
        raise TransferError(f"task {spec.name} has no {split} data ({exc})") from None
    if not data.has_labels:
        raise TransferError(f"task {spec.name}: the {split} split has unlabeled examples; pick a labeled split")
    return data


# ------------------------------------------------------------------------------ scoring
def score_prompts(
    scorer: Scorer,
    prompts: Sequence[torch.Tensor],
    data: TaskData,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
    score: ScoreFn | None = None,
) -> list[list[int]]:
    """Predicted class ids (S, N) of every prompt on every example, in mixed-prompt batches
    scored by ``score`` (default ``scorer.score``; e.g. a ShardedScore of it)."""
    score = score or scorer.score
    labels = LabelSet.build(scorer.backbone, data.task.label_words)
    device = scorer.backbone.device
    prompts = [p.to(device) for p in prompts]  # each (n_s, e), moved once
    texts = data.texts
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # as score_texts: little padding
    pairs = [(i, s) for i in order for s in range(len(prompts))]
    preds = [[0] * len(texts) for _ in prompts]
    for a, b in iter_batches(len(pairs), batch_size):
        chunk = pairs[a:b]
        scores = score([texts[i] for i, _ in chunk], [prompts[s] for _, s in chunk], labels)
        for (i, s), p in zip(chunk, scores.preds):
            preds[s][i] = p
        if progress:
            progress(b - a)
    return preds


def compute_transfer(
    backbone: Backbone,
    sources: Sequence[TransferSource],
    targets: Sequence[TaskData],
    config: TransferConfig = TransferConfig(),
    *,
    progress: Progress | None = None,
) -> TransferResult:
    """The transfer matrix, relative shares, SPoT similarities, correlations and top-k."""
    sources, targets = list(sources), list(targets)
    check_sources(sources, backbone)
    _check_targets(targets)
    rows = len(sources) * sum(len(t) for t in targets)
    scorer = Scorer(backbone, max_source_length=config.max_source_length, compile=config.compiles(rows))
    prompts = [s.prompt for s in sources]
    t0 = time.perf_counter()
    metrics: list[list[dict[str, float]]] = [[{} for _ in targets] for _ in sources]
    with ShardedScore.planned(scorer, config.shards) as sharded:
        if scorer.compiled:
            log.info("forwards %s", "compiled" if sharded.warm_up(scorer) else "run eagerly (compile failed)")
        for j, data in enumerate(targets):
            log.info("target %s: %d examples x %d prompts", data.task.name, len(data), len(sources))
            preds = score_prompts(scorer, prompts, data, batch_size=config.batch_size, progress=progress,
                                  score=sharded)
            for i, p in enumerate(preds):
                metrics[i][j] = compute_metrics(data.task, p, data)
    seconds = time.perf_counter() - t0
    raw = [[main_score(m) for m in row] for row in metrics]
    own, notes = _own_sources(sources, targets, raw)
    relative = _relative(raw, own)
    similarity = similarity_matrices(prompts)
    return TransferResult(
        sources=sources,
        targets=targets,
        metrics=metrics,
        raw=raw,
        relative=relative,
        own=own,
        notes=notes,
        similarity=similarity,
        correlation={name: correlate(similarity[name], relative, own, sources, targets) for name in SIMILARITIES},
        top_k=top_sources(raw, sources, targets, config.top_k),
        backbone={"name": backbone.name, "fingerprint": backbone.fingerprint, "d_model": backbone.d_model},
        seconds=seconds,
        rows=rows,
    )


def _own_sources(
    sources: Sequence[TransferSource], targets: Sequence[TaskData], raw: list[list[float]]
) -> tuple[list[int | None], list[str | None]]:
    """Per target: the first source trained on it (if any) and, when relative is null, why."""
    own: list[int | None] = []
    notes: list[str | None] = []
    for j, t in enumerate(targets):
        idx = next((i for i, s in enumerate(sources) if s.task == t.task.name), None)
        note = None
        if idx is None:
            note = f"no source prompt was trained on {t.task.name}"
        elif not raw[idx][j] > 0:
            note = f"its own prompt {sources[idx].label} scores {raw[idx][j]:.4g} (<= 0): no share can be taken"
        if note:
            log.warning("relative transfer on %s is null: %s", t.task.name, note)
        own.append(idx)
        notes.append(note)
    return own, notes


def _relative(raw: list[list[float]], own: list[int | None]) -> list[list[float | None]]:
    out: list[list[float | None]] = [[None] * len(own) for _ in raw]
    for j, o in enumerate(own):
        if o is None or not raw[o][j] > 0:
            continue
        for i in range(len(raw)):
            out[i][j] = 1.0 if i == o else raw[i][j] / raw[o][j]  # the own cell is exactly 1.0
    return out


def top_sources(
    raw: list[list[float]], sources: Sequence[TransferSource], targets: Sequence[TaskData], k: int
) -> list[list[int]]:
    """Per target: the k best sources by raw score, leaving out prompts trained on that task."""
    out = []
    for j, t in enumerate(targets):
        cands = [i for i, s in enumerate(sources) if s.task != t.task.name]
        cands.sort(key=lambda i: (-raw[i][j], i))  # stable: ties keep the given order
        out.append(cands[:k])
    return out


def correlate(
    sim: list[list[float]],
    relative: list[list[float | None]],
    own: list[int | None],
    sources: Sequence[TransferSource],
    targets: Sequence[TaskData],
) -> Correlation:
    """Similarity of (source, target's own prompt) against relative transfer of source on target.

    Pairs: every target with a defined relative column, every source not trained on that target
    (its own prompt and other prompts of the same task would only measure self-transfer).
    """
    xs, ys = [], []
    for j, t in enumerate(targets):
        o = own[j]
        if o is None or relative[o][j] is None:
            continue
        for i, s in enumerate(sources):
            if s.task != t.task.name:
                xs.append(sim[i][o])
                ys.append(relative[i][j])
    result = Correlation(n_pairs=len(xs))
    if len(xs) < 3:
        result.note = f"{len(xs)} (source, target) pair(s) with a known own prompt; need at least 3"
        return result
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        result.note = "similarity or transfer is constant over the pairs: correlation undefined"
        return result
    from scipy import stats  # imported here: only this path needs scipy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = stats.spearmanr(xs, ys)
        pe = stats.pearsonr(xs, ys)
    result.spearman, result.spearman_p = _finite(sp.statistic), _finite(sp.pvalue)
    result.pearson, result.pearson_p = _finite(pe.statistic), _finite(pe.pvalue)
    return result


def _finite(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
