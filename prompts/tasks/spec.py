"""Tasks as T5 text-to-text problems: a template over named fields, label words, metrics.

A :class:`TaskSpec` is plain data (it round-trips through JSON) so that an artifact carries
its task and a server can serve a custom task without code. The built-in GLUE/SuperGLUE
specs live in :mod:`spp.prompts.tasks.catalog`; loading data lives in :mod:`spp.prompts.tasks.data`.

Canonical column names: a task's data is described by its template fields plus
``label_column`` (and ``group_column``). Each data source may spell them differently (GLUE's
RTE TSV has ``sentence1``/``sentence2`` where SuperGLUE has ``premise``/``hypothesis``), so
``columns`` maps, per source kind (``tsv``, ``jsonl``, ``csv``, ``hub``), a canonical name to
the source column: a dotted path into nested JSON (``target.span1_text``), or a list of paths
whose values are joined with ``/`` (MultiRC's question id = paragraph idx / question idx).
A source column that is absent falls back to the canonical name, so files that already use
the canonical names need no mapping.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from spp.prompts.errors import SppError

SPLITS = ("train", "validation", "test")
FILE_FORMATS = ("glue-tsv", "superglue-jsonl", "csv", "jsonl", "tsv")
SOURCE_KINDS = ("tsv", "jsonl", "csv", "hub")
# Implemented by spp.prompts.tasks.metrics (a test keeps the two in sync); kept here so a spec
# can be validated, and a score computed, without importing scikit-learn.
METRIC_NAMES = ("accuracy", "f1", "f1a", "macro_f1", "mcc", "pearson", "spearman", "em")
# Templates come from artifacts other people publish: untrusted input (see parse_template; a
# ``{x:>300000000}`` would allocate 300 MB per input). Both lengths are checked before allocation.
MAX_TEMPLATE_CHARS = 16_384
MAX_FORMATTED_CHARS = 1_000_000
_SNAP_DECIMALS = 6  # regression labels are rounded to this many decimals before binning
_BINARY_METRICS = ("f1", "f1a")
_REGRESSION_METRICS = ("pearson", "spearman")


def main_score(metrics: Mapping[str, float], names: Sequence[str] | None = None) -> float:
    """THE main score of a task: the mean of its metrics (SuperPos-Prompt reports two-metric
    tasks that way); NaN when there are none.

    ``names`` are the task's metric names (``TaskSpec.metrics``); without them every key in
    :data:`METRIC_NAMES` counts. Either way bookkeeping entries stored beside the metrics
    (generate mode's ``invalid_rate``, a loss) never move the score.
    """
    wanted = set(names) if names else set(METRIC_NAMES)
    values = [float(v) for k, v in metrics.items() if k in wanted]
    return sum(values) / len(values) if values else math.nan


class TaskError(SppError):
    """Unknown task, bad spec, or data that does not fit the task (one-line message)."""


class TaskInputError(TaskError):
    """An input lacks a template field or has a label outside the label words."""


class TemplateError(TaskError):
    """A template that is not plain text with plain ``{field}`` placeholders, or too long."""


class FormattedTooLongError(TaskInputError):
    """The text a template would render from an input is longer than the allowed maximum."""


Pieces = tuple[tuple[str, "str | None"], ...]


def parse_template(template: Any) -> Pieces:
    """THE template check, run wherever a template enters (task spec, artifact metadata, so
    publish, pull, PEFT import and load): the ``(literal, field name or None)`` pieces.

    Allowed: literal text (``{{``/``}}`` for braces) and ``{name}``, ``name`` an identifier.
    Refused (one-line :class:`TemplateError`): attribute or index access (``{x.__class__}``,
    ``{x[0]}``), positional fields, conversions (``{x!r}``), format specs (``{x:>9}``),
    malformed braces, and templates longer than :data:`MAX_TEMPLATE_CHARS`.
    """
    if not isinstance(template, str) or not template:
        raise TemplateError(f"template must be a non-empty string, got {template!r:.80}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template is {len(template)} characters; the maximum is {MAX_TEMPLATE_CHARS}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"template {template!r:.80} is malformed ({exc})") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            if not name.isidentifier():
                raise TemplateError(
                    f"template placeholder {shown:.80} is not a plain {{field}} "
                    "(no attribute or index access, no positional fields)"
                )
            if conversion is not None or spec:
                raise TemplateError(f"template placeholder {shown:.80} has a conversion or format spec; only plain {{field}} is allowed")
        pieces.append((literal, name))
    return tuple(pieces)


def render_template(pieces: Pieces, values: Mapping[str, str], *, limit: int = MAX_FORMATTED_CHARS) -> str:
    """The template's text with ``values`` substituted; the length is checked before the text is
    built (FormattedTooLongError past ``limit``), so no input can make it allocate more."""
    parts: list[str] = []  # references to existing strings: nothing the size of the result yet
    total = 0
    for literal, name in pieces:
        parts.append(literal)
        total += len(literal)
        if name is not None:
            parts.append(values[name])
            total += len(values[name])
    if total > limit:
        raise FormattedTooLongError(f"the formatted input would be {total} characters; the limit is {limit}")
    return "".join(parts)


@dataclass(frozen=True)
class TaskSpec:
    """One classification (or rounded-regression) task as text-to-text.

    template: literal text with plain ``{field}`` placeholders (checked by
        :func:`parse_template`), e.g. ``"rte sentence1: {premise} sentence2: {hypothesis}"``.
    label_words: the target text of each class, index = class id.
    label_column: the column holding the gold label in data files.
    label_aliases: raw label value (as str) -> class id, for files whose labels are not
        0..k-1 (e.g. GLUE TSV's ``entailment``/``not_entailment``).
    metrics: names understood by :mod:`spp.prompts.tasks.metrics`; the main score is their mean.
    regression: labels are numbers rounded onto the numeric label words (STS-B recipe).
    group_column: column grouping examples (MultiRC's question id, for exact match).
    hub_revision: pin the Hub dataset to a commit/tag (None: the default branch).
    columns: source kind -> {canonical name: source column path or list of paths}.
    explode: dotted paths of nested JSON lists flattened in turn, one example per innermost
        element (SuperGLUE MultiRC: paragraph -> questions -> answers).
    data_dir: default folder of ``file_names`` (a spec file's relative value is resolved
        against the spec file's folder by :func:`spp.prompts.tasks.catalog.get_task`).
    """

    name: str
    template: str
    label_words: tuple[str, ...]
    label_column: str = "label"
    label_aliases: Mapping[str, int] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("accuracy",)
    regression: bool = False
    group_column: str | None = None
    hub: tuple[str, str | None] | None = None  # (dataset path, config name) on the Hub
    hub_splits: Mapping[str, str] = field(default_factory=dict)  # spp split -> Hub split name
    file_format: str = "jsonl"  # glue-tsv | superglue-jsonl | csv | jsonl | tsv
    file_names: Mapping[str, str] = field(default_factory=dict)  # split -> file name in --data-dir
    tsv_columns: tuple[str, ...] | None = None  # for header-less TSV files (CoLA)
    description: str = ""
    hub_revision: str | None = None
    columns: Mapping[str, Mapping[str, str | tuple[str, ...]]] = field(default_factory=dict)
    explode: tuple[str, ...] = ()
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name or "@" in self.name:
            raise TaskError(f"task name must be non-empty without '/' or '@', got {self.name!r}")
        try:
            parse_template(self.template)
        except TemplateError as exc:
            raise TemplateError(f"task {self.name}: {exc}") from None
        for key in ("label_words", "metrics", "explode"):
            object.__setattr__(self, key, _str_tuple(self, key, getattr(self, key)))
        if self.tsv_columns is not None:
            object.__setattr__(self, "tsv_columns", _str_tuple(self, "tsv_columns", self.tsv_columns))
        if len(self.label_words) < 2:
            raise TaskError(f"task {self.name}: label_words needs at least 2 entries")
        if len(set(self.label_words)) != len(self.label_words):
            raise TaskError(f"task {self.name}: label_words must be distinct")
        if not self.fields:
            raise TaskError(f"task {self.name}: template {self.template!r} names no {{field}}")
        _check_str(self, "label_column", self.label_column)
        if self.group_column is not None:
            _check_str(self, "group_column", self.group_column)
        self._check_labels()
        self._check_metrics()
        self._check_sources()

    # ----------------------------------------------------------------------------- validation
    def _check_labels(self) -> None:
        aliases = _str_map(self, "label_aliases", self.label_aliases, value_type=int)
        bad = {k: v for k, v in aliases.items() if not 0 <= v < len(self.label_words)}
        if bad:
            raise TaskError(f"task {self.name}: label_aliases {bad} point outside 0..{len(self.label_words) - 1}")
        object.__setattr__(self, "label_aliases", aliases)
        if not isinstance(self.regression, bool):
            raise TaskError(f"task {self.name}: regression must be true or false, got {self.regression!r}")
        if self.regression:
            try:
                values = [float(w) for w in self.label_words]
            except ValueError:
                raise TaskError(f"task {self.name}: regression needs numeric label_words") from None
            if any(math.isnan(v) for v in values) or values != sorted(values):
                raise TaskError(f"task {self.name}: regression label_words must be increasing numbers")

    def _check_metrics(self) -> None:
        if not self.metrics:
            raise TaskError(f"task {self.name}: metrics must name at least one metric")
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown:
            raise TaskError(f"task {self.name}: unknown metrics {unknown} (known: {', '.join(METRIC_NAMES)})")
        if any(m in _BINARY_METRICS for m in self.metrics) and self.num_labels != 2:
            raise TaskError(f"task {self.name}: metrics f1/f1a need exactly 2 label_words")
        if any(m in _REGRESSION_METRICS for m in self.metrics) and not self.regression:
            raise TaskError(f"task {self.name}: metrics pearson/spearman need regression = true")
        if "em" in self.metrics and self.group_column is None:
            raise TaskError(f"task {self.name}: metric em needs a group_column")

    def _check_sources(self) -> None:
        if self.hub is not None:
            hub = tuple(self.hub)
            if len(hub) != 2 or not isinstance(hub[0], str) or not (hub[1] is None or isinstance(hub[1], str)):
                raise TaskError(f"task {self.name}: hub must be [dataset path, config or null], got {self.hub!r}")
            object.__setattr__(self, "hub", hub)
        for key in ("hub_revision", "data_dir", "description"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise TaskError(f"task {self.name}: {key} must be a string, got {value!r}")
        for key in ("hub_splits", "file_names"):
            values = _str_map(self, key, getattr(self, key), value_type=str)
            if set(values) - set(SPLITS):
                raise TaskError(f"task {self.name}: {key} keys must be among {', '.join(SPLITS)}")
            object.__setattr__(self, key, values)
        if self.file_format not in FILE_FORMATS:
            raise TaskError(f"task {self.name}: file_format must be one of {', '.join(FILE_FORMATS)}")
        object.__setattr__(self, "columns", self._normalised_columns())

    def _normalised_columns(self) -> dict[str, dict[str, str | tuple[str, ...]]]:
        if not isinstance(self.columns, Mapping):
            raise TaskError(f"task {self.name}: columns must map a source kind to a table")
        known = set(self.fields) | {self.label_column} | ({self.group_column} if self.group_column else set())
        out: dict[str, dict[str, str | tuple[str, ...]]] = {}
        for kind, mapping in self.columns.items():
            if kind not in SOURCE_KINDS:
                raise TaskError(f"task {self.name}: columns key {kind!r} must be one of {', '.join(SOURCE_KINDS)}")
            if not isinstance(mapping, Mapping):
                raise TaskError(f"task {self.name}: columns.{kind} must be a table")
            out[kind] = {}
            for canon, src in mapping.items():
                if canon not in known:
                    raise TaskError(
                        f"task {self.name}: columns.{kind} names {canon!r}, not a template field or label/group column"
                    )
                if isinstance(src, str):
                    out[kind][canon] = src
                else:
                    out[kind][canon] = _str_tuple(self, f"columns.{kind}.{canon}", src)
        return out

    # ----------------------------------------------------------------------------- accessors
    @functools.cached_property  # cached: format() runs once per example on 400k-row datasets
    def pieces(self) -> Pieces:
        """The checked template as (literal, field) pieces (see :func:`parse_template`)."""
        return parse_template(self.template)

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """Field names used by the template, in order of first use."""
        return tuple(dict.fromkeys(name for _, name in self.pieces if name is not None))

    @property
    def num_labels(self) -> int:
        return len(self.label_words)

    def source_column(self, kind: str, canonical: str) -> str | tuple[str, ...]:
        """The column (path) holding ``canonical`` in a source of ``kind`` (tsv/jsonl/csv/hub)."""
        return self.columns.get(kind, {}).get(canonical, canonical)

    def format(self, example: Mapping[str, Any], *, limit: int = MAX_FORMATTED_CHARS) -> str:
        """Render the template; a missing field raises TaskInputError naming it, a text longer
        than ``limit`` characters FormattedTooLongError (before it is built)."""
        missing = [f for f in self.fields if f not in example or example[f] is None]
        if missing:
            raise TaskInputError(f"task {self.name}: missing field(s) {', '.join(missing)}")
        try:
            return render_template(self.pieces, {f: _clean(example[f]) for f in self.fields}, limit=limit)
        except FormattedTooLongError as exc:
            raise FormattedTooLongError(f"task {self.name}: {exc}") from None

    def parse_label(self, raw: Any, *, where: str = "input") -> tuple[int | None, float | None]:
        """(class id, unrounded target) of a raw label; (None, None) when unlabeled.

        A value maps through ``label_aliases``, then the label words themselves, then the
        integers 0..k-1. None, ``""`` and ``-1`` (the Hub's "no label") mean unlabeled. With
        ``regression`` the number is rounded onto the numeric label words and kept as target.
        Anything else raises TaskInputError naming the value and ``where`` (file and line).
        """
        if raw is None:
            return None, None
        text = str(raw).strip()  # JSON true/false -> "True"/"False", the boolean label words
        if isinstance(raw, float) and raw.is_integer() and not self.regression:
            text = str(int(raw))
        if text == "":
            return None, None
        if self.regression:
            return self._regression_label(text, where)
        if text in self.label_aliases:
            return self.label_aliases[text], None
        if text in self.label_words:
            return self.label_words.index(text), None
        if text.lstrip("-").isdigit() and -1 <= int(text) < self.num_labels:
            return (None if int(text) == -1 else int(text)), None
        raise TaskInputError(
            f"task {self.name}: label {text!r} at {where} is not one of the label words ({', '.join(self.label_words)})"
        )

    def _regression_label(self, text: str, where: str) -> tuple[int | None, float | None]:
        try:
            value = float(text)
        except ValueError:
            raise TaskInputError(f"task {self.name}: label {text!r} at {where} is not a number") from None
        if not math.isfinite(value):
            raise TaskInputError(f"task {self.name}: label {text!r} at {where} is not a finite number")
        # Snap to 6 decimals: the Hub stores STS-B as float32, where 2.3 arrives as 2.2999999523,
        # which would round into another 0.2 bin than the TSV's "2.3" (scores have <= 4 decimals).
        value = round(value, _SNAP_DECIMALS)
        words = [float(w) for w in self.label_words]
        if value == -1 and words[0] > -1:
            return None, None  # the Hub's "no label" (STS-B test)
        if not words[0] <= value <= words[-1]:
            raise TaskInputError(f"task {self.name}: label {text!r} at {where} is outside {words[0]}..{words[-1]}")
        return _nearest(words, value), value

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["label_aliases"] = dict(self.label_aliases)
        d["hub_splits"] = dict(self.hub_splits)
        d["file_names"] = dict(self.file_names)
        d["columns"] = {k: dict(v) for k, v in self.columns.items()}
        return d

    def __hash__(self) -> int:  # the Mapping fields are dicts; hash the JSON form instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskSpec":
        if not isinstance(data, Mapping):
            raise TaskError(f"a task spec must be a table/object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TaskError(f"unknown task spec key(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        missing = [k for k in ("name", "template", "label_words") if k not in data]
        if missing:
            raise TaskError(f"task spec is missing required key(s): {', '.join(missing)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise TaskError(f"bad task spec: {exc}") from None


def _clean(value: Any) -> str:
    # Newlines and tabs inside a field would change tokenisation versus the training data.
    return " ".join(str(value).split())


def _check_str(spec: TaskSpec, key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TaskError(f"task {spec.name}: {key} must be a non-empty string, got {value!r}")


def _str_tuple(spec: TaskSpec, key: str, value: Any) -> tuple[str, ...]:
    # A bare string would silently become a tuple of characters.
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TaskError(f"task {spec.name}: {key} must be a list of strings, got {value!r}")
    if not all(isinstance(v, str) and v for v in value):
        raise TaskError(f"task {spec.name}: {key} must hold non-empty strings, got {list(value)!r}")
    return tuple(value)


def _str_map(spec: TaskSpec, key: str, value: Any, *, value_type: type) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TaskError(f"task {spec.name}: {key} must be a table/object, got {value!r}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(v, value_type) or isinstance(v, bool):
            raise TaskError(f"task {spec.name}: {key}[{k!r}] must be {value_type.__name__}, got {v!r}")
        out[str(k)] = v
    return out


def _nearest(words: list[float], value: float) -> int:
    """Index of the label word nearest to ``value``.

    On an even grid this is T5's ``np.round(x * 5) / 5`` for STS-B: ``(value - lo) * inv``
    with ``inv = (k - 1) / (hi - lo)`` is exact for 0..5 (inv = 5.0, so 0.3 -> 1.5 -> 2), and
    Python's round() rounds halves to even like numpy's.
    """
    lo, hi, k = words[0], words[-1], len(words)
    step = (hi - lo) / (k - 1)
    if all(abs(w - (lo + i * step)) <= 1e-9 * max(1.0, abs(hi)) for i, w in enumerate(words)):
        return min(k - 1, max(0, round((value - lo) * ((k - 1) / (hi - lo)))))
    return min(range(k), key=lambda i: abs(words[i] - value))
