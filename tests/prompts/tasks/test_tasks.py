"""TaskSpec validation, the built-in catalogue, and custom task spec files."""

from __future__ import annotations

import json

import pytest

from spp.prompts.tasks import get_task, task_names
from spp.prompts.tasks import TaskError, TaskInputError, TaskSpec

EXPECTED_LABEL_WORDS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("choice1", "choice2"),
    "multirc": ("False", "True"),
    "wic": ("False", "True"),
    "boolq": ("False", "True"),
    "wsc": ("False", "True"),
}
EXPECTED_METRICS = {
    "cola": ("mcc",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "cb": ("accuracy", "macro_f1"),
    "multirc": ("f1a", "em"),
    **{t: ("accuracy",) for t in ("rte", "sst2", "qnli", "mnli", "copa", "wic", "boolq", "wsc")},
}
GLUE = {"qqp", "qnli", "mnli", "sst2", "stsb", "mrpc", "cola"}


def test_catalogue_has_the_13_superpos_tasks_plus_wsc():
    assert set(task_names()) == set(EXPECTED_METRICS)
    assert len(task_names()) == 14
    assert task_names() == sorted(task_names())


@pytest.mark.parametrize("name", sorted(EXPECTED_LABEL_WORDS))
def test_label_words_follow_the_hub_label_ids(name):
    assert get_task(name).label_words == EXPECTED_LABEL_WORDS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_METRICS))
def test_standard_metrics_and_hub_source(name):
    spec = get_task(name)
    assert spec.metrics == EXPECTED_METRICS[name]
    assert spec.hub[0] == ("nyu-mll/glue" if name in GLUE else "aps/super_glue")
    assert spec.template.startswith(name + " ")


def test_stsb_is_26_way_rounded_regression():
    spec = get_task("stsb")
    assert spec.regression
    assert spec.label_words[:3] == ("0.0", "0.2", "0.4") and spec.label_words[-1] == "5.0"
    assert len(spec.label_words) == 26


def test_mnli_uses_the_matched_splits():
    spec = get_task("mnli")
    assert spec.hub == ("nyu-mll/glue", "mnli")
    assert spec.hub_splits["validation"] == "validation_matched"
    assert spec.file_names["validation"] == "dev_matched.tsv"


def test_rte_template_renders_t5_style():
    spec = get_task("rte")
    assert spec.fields == ("premise", "hypothesis")
    assert spec.format({"premise": "A  cat\nsat.", "hypothesis": "A cat sat."}) == (
        "rte sentence1: A cat sat. sentence2: A cat sat."
    )
    with pytest.raises(TaskInputError, match="hypothesis"):
        spec.format({"premise": "x"})


@pytest.mark.parametrize("name", task_names())
def test_spec_round_trips_through_json_and_hashes(name):
    spec = get_task(name)
    again = TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert hash(again) == hash(spec)


def test_get_task_is_case_insensitive_and_accepts_dashes():
    assert get_task("RTE") is get_task("rte")
    assert get_task("sst-2").name == "sst2"
    assert get_task(get_task("cb")) is get_task("cb")


def test_unknown_task_lists_known_ones():
    with pytest.raises(TaskError) as info:
        get_task("nope")
    msg = str(info.value)
    assert "'nope'" in msg and "boolq" in msg and "wsc" in msg and "\n" not in msg


CUSTOM = {
    "name": "reviews",
    "template": "review: {text}",
    "label_words": ["bad", "good"],
    "label_column": "stars",
    "label_aliases": {"1": 0, "5": 1},
    "file_names": {"train": "tr.csv", "validation": "va.csv"},
}
CUSTOM_TOML = """
name = "reviews"
template = "review: {text}"
label_words = ["bad", "good"]
label_column = "stars"
file_names = { train = "tr.csv", validation = "va.csv" }

[label_aliases]
"1" = 0
"5" = 1
"""


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_custom_spec_file_loads_and_resolves_data_dir(tmp_path, suffix):
    path = tmp_path / f"reviews{suffix}"
    path.write_text(json.dumps(CUSTOM) if suffix == ".json" else CUSTOM_TOML)
    spec = get_task(str(path))
    assert spec.name == "reviews" and spec.fields == ("text",)
    assert spec.label_words == ("bad", "good")
    assert dict(spec.label_aliases) == {"1": 0, "5": 1}
    assert spec.data_dir == str(tmp_path.resolve())  # relative file_names live next to the spec


@pytest.mark.parametrize(
    "change, key",
    [
        ({"labels": ["a", "b"]}, "labels"),  # unknown key
        ({"label_words": "ab"}, "label_words"),  # a string, not a list
        ({"label_words": ["only"]}, "label_words"),
        ({"metrics": ["accuracy", "bleu"]}, "bleu"),
        ({"metrics": ["em"]}, "group_column"),
        ({"metrics": ["pearson"]}, "regression"),
        ({"label_aliases": {"x": 7}}, "label_aliases"),
        ({"template": "review: {text"}, "template"),
        ({"template": "no fields"}, "template"),
        ({"file_names": {"dev": "d.csv"}}, "file_names"),
        ({"columns": {"parquet": {}}}, "columns"),
        ({"columns": {"csv": {"txt": "body"}}}, "columns"),
        ({"file_format": "xml"}, "file_format"),
        ({"regression": "yes"}, "regression"),
    ],
)
def test_bad_spec_is_a_one_line_error_naming_the_key(tmp_path, change, key):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**CUSTOM, **change}))
    with pytest.raises(TaskError) as info:
        get_task(path)
    assert key in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_required_key_and_unparseable_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "label_words": ["a", "b"]}))
    with pytest.raises(TaskError, match="missing required key.*template"):
        get_task(path)
    toml = tmp_path / "bad.toml"
    toml.write_text('name = "x"\ntemplate = \n')
    with pytest.raises(TaskError, match="cannot parse") as info:
        get_task(toml)
    assert "\n" not in str(info.value)
    with pytest.raises(TaskError, match="does not exist"):
        get_task(tmp_path / "absent.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(TaskError, match="top level"):
        get_task(tmp_path / "list.json")


def test_regression_needs_increasing_numeric_words():
    with pytest.raises(TaskError, match="numeric"):
        TaskSpec(name="r", template="{x}", label_words=("low", "high"), regression=True)
    with pytest.raises(TaskError, match="increasing"):
        TaskSpec(name="r", template="{x}", label_words=("1.0", "0.0"), regression=True)


def test_source_column_falls_back_to_canonical_name():
    spec = get_task("mrpc")
    assert spec.source_column("tsv", "sentence1") == "#1 String"
    assert spec.source_column("hub", "sentence1") == "sentence1"
    assert get_task("multirc").source_column("hub", "question_id") == ("idx.paragraph", "idx.question")


def test_stsb_float32_labels_land_in_the_tsv_bin():
    """The Hub stores STS-B as float32 (2.3 arrives as 2.2999999523): every one-decimal score
    0.0 .. 5.0 must land in the same 0.2 bin as the TSV's text, which is T5's np.round(x*5)/5."""
    import numpy as np

    spec = get_task("stsb")
    for i in range(51):
        text = f"{i / 10:.1f}"
        hub_value = float(np.float32(i / 10))
        label, target = spec.parse_label(hub_value, where="hub")
        assert label == spec.parse_label(text, where="tsv")[0], text
        assert float(spec.label_words[label]) == pytest.approx(np.round(float(text) * 5) / 5), text
        assert target == float(text)
    with pytest.raises(TaskInputError, match="not a finite number"):
        spec.parse_label(float("nan"))
