"""The built-in task catalogue: the 13 SuperPos-Prompt tasks (arXiv 2406.05279) plus WSC.

GLUE (qqp qnli mnli sst2 stsb mrpc cola) and SuperGLUE (multirc rte cb copa wic boolq wsc),
written as T5 text-to-text tasks (Raffel et al. 2020, appendix D): the input is
``"<task> <field>: <value> ..."`` and the target is a label word. Label words are in the order
of the Hub datasets' ClassLabel ids, so an integer label from any source is a class id.
Template fields use the Hub column names (``nyu-mll/glue``, ``aps/super_glue``); the
``columns`` tables map the GLUE TSV / SuperGLUE JSONL spellings onto them.

STS-B follows the T5 recipe: the score is rounded to the nearest 0.2 and written as text,
giving 26 label words ``"0.0" ... "5.0"``; Pearson/Spearman use the predicted word's number
against the unrounded gold score.

Custom tasks: :func:`get_task` also takes a path to a ``.json`` or ``.toml`` file whose keys
are :class:`TaskSpec` fields.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from spp.prompts.tasks.spec import TaskError, TaskSpec

_GLUE = "nyu-mll/glue"
_SUPERGLUE = "aps/super_glue"
_BOOL_WORDS = ("False", "True")
# SuperGLUE JSONL stores these labels as JSON booleans; CSV files often write them in lower case.
_BOOL_ALIASES = {"false": 0, "true": 1}
_STSB_WORDS = tuple(f"{i / 5:.1f}" for i in range(26))  # "0.0", "0.2", ..., "5.0"

_SPECS: tuple[dict[str, Any], ...] = (
    # ------------------------------------------------------------------------------- GLUE
    dict(name="cola", template="cola sentence: {sentence}", label_words=("unacceptable", "acceptable"),
         metrics=("mcc",), hub=(_GLUE, "cola"), file_format="glue-tsv",
         tsv_columns=("source", "label", "label_notes", "sentence"),  # train/dev.tsv have no header
         description="CoLA: is the sentence grammatically acceptable?"),
    dict(name="sst2", template="sst2 sentence: {sentence}", label_words=("negative", "positive"),
         hub=(_GLUE, "sst2"), file_format="glue-tsv", description="SST-2: sentiment of a movie-review sentence."),
    dict(name="mrpc", template="mrpc sentence1: {sentence1} sentence2: {sentence2}",
         label_words=("not_equivalent", "equivalent"), metrics=("f1", "accuracy"), hub=(_GLUE, "mrpc"),
         file_format="glue-tsv",
         columns={"tsv": {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}},
         description="MRPC: are the two sentences paraphrases?"),
    dict(name="qqp", template="qqp question1: {question1} question2: {question2}",
         label_words=("not_duplicate", "duplicate"), metrics=("f1", "accuracy"), hub=(_GLUE, "qqp"),
         file_format="glue-tsv", columns={"tsv": {"label": "is_duplicate"}},
         description="QQP: are the two Quora questions duplicates?"),
    dict(name="stsb", template="stsb sentence1: {sentence1} sentence2: {sentence2}", label_words=_STSB_WORDS,
         metrics=("pearson", "spearman"), regression=True, hub=(_GLUE, "stsb"), file_format="glue-tsv",
         columns={"tsv": {"label": "score"}},
         description="STS-B: similarity 0-5, rounded to 0.2 and written as text (T5 recipe)."),
    dict(name="mnli", template="mnli hypothesis: {hypothesis} premise: {premise}",
         label_words=("entailment", "neutral", "contradiction"), hub=(_GLUE, "mnli"),
         hub_splits={"validation": "validation_matched", "test": "test_matched"}, file_format="glue-tsv",
         file_names={"validation": "dev_matched.tsv", "test": "test_matched.tsv"},
         columns={"tsv": {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}},
         description="MNLI (matched): does the premise entail, contradict or neither?"),
    dict(name="qnli", template="qnli question: {question} sentence: {sentence}",
         label_words=("entailment", "not_entailment"), hub=(_GLUE, "qnli"), file_format="glue-tsv",
         description="QNLI: does the sentence answer the question?"),
    # -------------------------------------------------------------------------- SuperGLUE
    dict(name="rte", template="rte sentence1: {premise} sentence2: {hypothesis}",
         label_words=("entailment", "not_entailment"), hub=(_SUPERGLUE, "rte"), file_format="superglue-jsonl",
         columns={"tsv": {"premise": "sentence1", "hypothesis": "sentence2"}},  # GLUE's RTE TSV
         description="RTE: does the premise entail the hypothesis?"),
    dict(name="cb", template="cb hypothesis: {hypothesis} premise: {premise}",
         label_words=("entailment", "contradiction", "neutral"), metrics=("accuracy", "macro_f1"),
         hub=(_SUPERGLUE, "cb"), file_format="superglue-jsonl",
         description="CommitmentBank: three-way entailment of an embedded clause."),
    dict(name="copa", template="copa choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}",
         label_words=("choice1", "choice2"), hub=(_SUPERGLUE, "copa"), file_format="superglue-jsonl",
         description="COPA: which choice is the cause/effect of the premise?"),
    dict(name="multirc", template="multirc question: {question} answer: {answer} paragraph: {paragraph}",
         label_words=_BOOL_WORDS, label_aliases=_BOOL_ALIASES, metrics=("f1a", "em"), group_column="question_id",
         hub=(_SUPERGLUE, "multirc"), file_format="superglue-jsonl",
         explode=("passage.questions", "passage.questions.answers"),
         columns={
             "jsonl": {"paragraph": "passage.text", "question": "passage.questions.question",
                       "answer": "passage.questions.answers.text", "label": "passage.questions.answers.label",
                       "question_id": ("idx", "passage.questions.idx")},
             "hub": {"question_id": ("idx.paragraph", "idx.question")},
         },
         description="MultiRC: is this answer to the question about the paragraph true? (one example per answer)"),
    dict(name="wic", template="wic sentence1: {sentence1} sentence2: {sentence2} word: {word}",
         label_words=_BOOL_WORDS, label_aliases=_BOOL_ALIASES, hub=(_SUPERGLUE, "wic"),
         file_format="superglue-jsonl", description="WiC: is the word used in the same sense in both sentences?"),
    dict(name="boolq", template="boolq passage: {passage} question: {question}", label_words=_BOOL_WORDS,
         label_aliases=_BOOL_ALIASES, hub=(_SUPERGLUE, "boolq"), file_format="superglue-jsonl",
         description="BoolQ: yes/no question about a passage."),
    dict(name="wsc", template="wsc text: {text} span1_text: {span1_text} span2_text: {span2_text}",
         label_words=_BOOL_WORDS, label_aliases=_BOOL_ALIASES, hub=(_SUPERGLUE, "wsc.fixed"),
         file_format="superglue-jsonl",
         columns={"jsonl": {"span1_text": "target.span1_text", "span2_text": "target.span2_text"}},
         description="WSC: does the pronoun (span2) refer to span1?"),
)


def _build() -> Mapping[str, TaskSpec]:
    return MappingProxyType({d["name"]: TaskSpec(**d) for d in _SPECS})


_CATALOG = _build()


def task_names() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(_CATALOG)


def get_task(name_or_path: str | Path | TaskSpec) -> TaskSpec:
    """A built-in task by name (case-insensitive; ``sst-2`` = ``sst2``), or a spec file.

    A path ending in ``.json`` or ``.toml`` is read as a custom :class:`TaskSpec`; relative
    ``file_names``/``data_dir`` in it are resolved against the spec file's folder.
    """
    if isinstance(name_or_path, TaskSpec):
        return name_or_path
    text = str(name_or_path)
    if text.lower().endswith((".json", ".toml")):
        return load_task_file(text)
    key = text.strip().lower().replace("-", "")
    if key in _CATALOG:
        return _CATALOG[key]
    raise TaskError(
        f"unknown task {text!r}; known tasks: {', '.join(task_names())} (or a .json/.toml task spec file)"
    )


def load_task_file(path: str | Path) -> TaskSpec:
    """Read a custom task spec from JSON or TOML; any problem is a one-line TaskError."""
    p = Path(path)
    if not p.is_file():
        raise TaskError(f"task spec file {p} does not exist")
    try:
        raw = p.read_bytes()
        data = tomllib.loads(raw.decode("utf-8")) if p.suffix.lower() == ".toml" else json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TaskError(f"task spec file {p}: cannot parse ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise TaskError(f"task spec file {p}: expected an object/table at the top level")
    if data.get("file_names") or data.get("data_dir") is not None:
        # Data files named by a spec live next to it unless the spec says otherwise.
        base = p.resolve().parent
        data["data_dir"] = str(base / data["data_dir"]) if isinstance(data.get("data_dir"), str) else str(base)
    try:
        return TaskSpec.from_dict(data)
    except TaskError as exc:  # keeps the subclass (TemplateError: an untrusted template)
        raise type(exc)(f"task spec file {p}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
