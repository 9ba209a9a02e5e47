"""Load a task's splits from local files or the Hugging Face Hub as :class:`TaskData`.

Sources, tried in this order:

1. ``data_dir`` (or the spec's own ``data_dir``/``file_names``): the format is detected from
   the files present: GLUE TSV (``train.tsv``, ``dev.tsv``/``dev_matched.tsv``, ``test.tsv``;
   CoLA's header-less files use the spec's ``tsv_columns``), SuperGLUE JSONL (``train.jsonl``,
   ``val.jsonl``, ``test.jsonl``; nested MultiRC/WSC records are flattened by the spec's
   ``explode``/``columns``), or CSV/JSONL/TSV named ``train``/``validation``/``test`` or by
   the spec's ``file_names``.
2. Otherwise the Hub, via ``datasets.load_dataset`` on the spec's ``hub`` id and config.

Every source maps its columns onto the template fields with the spec's ``columns`` table, so
nothing here branches on a task name. Labels become class ids through ``label_aliases``, the
label words themselves, or integers ``0..k-1``; ``-1`` or an empty/absent label means
"unlabeled" (GLUE/SuperGLUE test sets), which only the test split may be.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from spp.prompts.config import check_int
from spp.prompts.tasks.catalog import get_task
from spp.prompts.tasks.sources import MISSING, SplitNotFoundError, column_value, open_source
from spp.prompts.tasks.spec import SPLITS, TaskError, TaskSpec

logger = logging.getLogger(__name__)

HOLDOUT_THRESHOLD = 10_000  # train sets larger than this give up 1,000 examples as validation
HOLDOUT_SIZE = 1_000


@dataclass(frozen=True, slots=True)
class Example:
    """One input: template fields, the rendered text, class id, unrounded target, group id."""

    fields: dict[str, str]
    text: str
    label: int | None
    target: float | None = None  # regression: the gold number before rounding onto label words
    group: str | None = None  # e.g. MultiRC's question id


@dataclass
class TaskData:
    """The examples of one split plus where they came from (``source``, for artifact metadata)."""

    task: TaskSpec
    split: str
    examples: list[Example]
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[int | None]:
        return [e.label for e in self.examples]

    @property
    def targets(self) -> list[float | None]:
        return [e.target for e in self.examples]

    @property
    def groups(self) -> list[str | None]:
        return [e.group for e in self.examples]

    @property
    def has_labels(self) -> bool:
        return bool(self.examples) and all(e.label is not None for e in self.examples)

    def subset(self, indices: Sequence[int], *, split: str | None = None, note: str | None = None) -> "TaskData":
        """The examples at ``indices`` (in that order), optionally renamed to another split."""
        source = dict(self.source, num_examples=len(indices))
        if note:
            source["derived"] = f"{source['derived']}; {note}" if "derived" in source else note
        return TaskData(self.task, split or self.split, [self.examples[i] for i in indices], source)

    def sample(self, n: int | None, seed: int = 0) -> "TaskData":
        """A seeded subset of ``n`` examples in their original order (all of them if n >= len)."""
        if n is not None:
            check_int("max_samples", n, TaskError)
        if n is None or n >= len(self):
            return self
        indices = sorted(random.Random(seed).sample(range(len(self)), n))
        return self.subset(indices, note=f"{n} of {len(self)} sampled with seed {seed}")


def load_split(
    task: TaskSpec | str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> TaskData:
    """Load one split (``train``, ``validation`` or ``test``) of ``task``.

    ``max_samples`` keeps a deterministic subset (same ``seed``, same examples). The Hub is
    only used when no ``data_dir`` is given and the spec has none of its own.
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    rows, source = open_source(spec, split, data_dir)
    examples = [_make_example(spec, source["format"], row, where, split) for row, where in rows]
    if not examples:
        raise TaskError(f"task {spec.name}: {split} split from {source['id']} ({source['split']}) has no examples")
    source["num_examples"] = len(examples)
    return TaskData(spec, split, examples, source).sample(max_samples, seed)


def load_splits(
    task: TaskSpec | str,
    *,
    data_dir: str | Path | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    seed: int = 0,
) -> dict[str, TaskData]:
    """Train/validation/test following ATTEMPT, Residual PT and SuperPos-Prompt.

    GLUE and SuperGLUE hide their test labels, so the papers evaluate on the official
    validation set and carve a validation set out of what remains:

    * a labeled test split exists: use train/validation/test as they are;
    * otherwise, if train has more than 10,000 examples: hold out 1,000 training examples
      (seeded) as validation, and use the official validation set as test;
    * otherwise: split the official validation set in half (seeded): the first half is
      validation, the second test.

    ``max_train`` / ``max_eval`` then keep seeded subsets of train / of validation and test.
    A missing train or validation split raises TaskError; a missing test split is allowed.
    """
    spec = get_task(task)
    train = load_split(spec, "train", data_dir=data_dir)
    validation = load_split(spec, "validation", data_dir=data_dir)
    for data in (train, validation):
        if not data.has_labels:
            raise TaskError(f"task {spec.name}: the {data.split} split ({data.source['split']}) has unlabeled examples")
    try:
        test: TaskData | None = load_split(spec, "test", data_dir=data_dir)
    except SplitNotFoundError:
        test = None
    splits = _paper_splits(train, validation, test, seed)
    return {
        "train": splits["train"].sample(max_train, seed),
        "validation": splits["validation"].sample(max_eval, seed),
        "test": splits["test"].sample(max_eval, seed),
    }


def _paper_splits(train: TaskData, validation: TaskData, test: TaskData | None, seed: int) -> dict[str, TaskData]:
    """The rule documented in :func:`load_splits` (before max_train / max_eval)."""
    if test is not None and test.has_labels:
        return {"train": train, "validation": validation, "test": test}
    rng = random.Random(seed)
    if len(train) > HOLDOUT_THRESHOLD:
        order = rng.sample(range(len(train)), len(train))
        held, rest = sorted(order[:HOLDOUT_SIZE]), sorted(order[HOLDOUT_SIZE:])
        return {
            "train": train.subset(rest, note=f"{HOLDOUT_SIZE} held out as validation (seed {seed})"),
            "validation": train.subset(held, split="validation", note=f"held out of train (seed {seed})"),
            "test": validation.subset(range(len(validation)), split="test", note="official validation used as test"),
        }
    if len(validation) < 2:
        raise TaskError(f"task {train.task.name}: cannot halve a validation set of {len(validation)} example(s)")
    order = rng.sample(range(len(validation)), len(validation))
    half = len(validation) // 2
    note = f"half of official validation (seed {seed})"
    return {
        "train": train,
        "validation": validation.subset(sorted(order[:half]), note=f"first {note}"),
        "test": validation.subset(sorted(order[half:]), split="test", note=f"second {note}"),
    }


def _make_example(spec: TaskSpec, kind: str, record: Mapping[str, Any], where: str, split: str) -> Example:
    fields: dict[str, str] = {}
    for name in spec.fields:
        value = column_value(spec, kind, record, name)
        if value is MISSING or value is None:
            raise TaskError(f"{where}: missing column {spec.source_column(kind, name)!r} for field {name!r}")
        fields[name] = str(value)
    raw = column_value(spec, kind, record, spec.label_column)
    label, target = spec.parse_label(None if raw is MISSING else raw, where=where)
    if label is None and split != "test":
        raise TaskError(f"{where}: no label in column {spec.source_column(kind, spec.label_column)!r}")
    group = None
    if spec.group_column is not None:
        raw = column_value(spec, kind, record, spec.group_column)
        group = None if raw is MISSING or raw is None else str(raw)
    return Example(fields, spec.format(fields), label, target, group)
