"""Loading GLUE TSV, SuperGLUE JSONL, custom CSV and (faked) Hub data into TaskData."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from spp.prompts.tasks import data as data_mod
from spp.prompts.tasks import sources as sources_mod
from spp.prompts.tasks import get_task
from spp.prompts.tasks.data import SplitNotFoundError, load_split, load_splits
from spp.prompts.tasks import TaskError, TaskInputError


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


@pytest.fixture
def rte_tsv(tmp_path: Path) -> Path:
    write_tsv(tmp_path / "train.tsv", [RTE_HEADER, ["0", "A cat sat.", "A cat sits.", "entailment"],
                                       ["1", 'He said "hi.', "Nobody spoke.", "not_entailment"]])
    write_tsv(tmp_path / "dev.tsv", [RTE_HEADER] + [[str(i), f"p{i}", f"h{i}", "entailment"] for i in range(6)])
    write_tsv(tmp_path / "test.tsv", [["index", "sentence1", "sentence2"], ["0", "P.", "H."]])  # GLUE: no labels
    return tmp_path


def test_rte_glue_tsv(rte_tsv):
    train = load_split("rte", "train", data_dir=rte_tsv)
    assert len(train) == 2 and train.split == "train" and train.has_labels
    assert train.labels == [0, 1]
    assert train[1].fields == {"premise": 'He said "hi.', "hypothesis": "Nobody spoke."}  # stray quote kept
    assert train.texts[0] == "rte sentence1: A cat sat. sentence2: A cat sits."
    file_sha = hashlib.sha256((rte_tsv / "train.tsv").read_bytes()).hexdigest()
    assert train.source == {"id": f"local:{rte_tsv.resolve().name}", "config": None, "revision": None, "format": "tsv",
                            "split": "train.tsv", "sha256": file_sha, "hub_split": "train", "num_examples": 2}
    assert str(rte_tsv.resolve()) not in json.dumps(train.source)  # no local path travels in artifacts
    test = load_split("rte", "test", data_dir=rte_tsv)
    assert test.labels == [None] and not test.has_labels
    assert test.texts == ["rte sentence1: P. sentence2: H."]


def test_rte_superglue_jsonl_preferred_over_tsv(rte_tsv):
    write_jsonl(rte_tsv / "train.jsonl", [{"premise": "J.", "hypothesis": "K.", "label": "not_entailment", "idx": 0}])
    write_jsonl(rte_tsv / "val.jsonl", [{"premise": "V.", "hypothesis": "W.", "label": "entailment", "idx": 0}])
    train = load_split("rte", "train", data_dir=rte_tsv)  # rte's native format is SuperGLUE JSONL
    assert train.source["format"] == "jsonl" and train.labels == [1]
    assert train.texts == ["rte sentence1: J. sentence2: K."]
    assert load_split("rte", "validation", data_dir=rte_tsv).source["split"] == "val.jsonl"


def test_cola_headerless_train_and_headed_test(tmp_path):
    write_tsv(tmp_path / "train.tsv", [["gj04", "1", "", "The sailors rode the breeze."],
                                       ["gj04", "0", "*", "The more we study verbs."]])
    write_tsv(tmp_path / "test.tsv", [["index", "sentence"], ["0", "Bill whistled past the house."]])
    train = load_split("cola", "train", data_dir=tmp_path)
    assert train.labels == [1, 0]
    assert train.texts == ["cola sentence: The sailors rode the breeze.", "cola sentence: The more we study verbs."]
    test = load_split("cola", "test", data_dir=tmp_path)
    assert test.texts == ["cola sentence: Bill whistled past the house."] and not test.has_labels


def test_stsb_rounds_labels_and_keeps_the_gold_score(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
              "sentence1", "sentence2", "score"]
    scores = ["0.1", "0.3", "2.5", "4.91", "5.000"]
    rows = [[str(i), "g", "f", "y", "o", "s", "s", f"a{i}", f"b{i}", s] for i, s in enumerate(scores)]
    write_tsv(tmp_path / "train.tsv", [header] + rows)
    train = load_split("stsb", "train", data_dir=tmp_path)
    words = [train.task.label_words[i] for i in train.labels]
    assert words == ["0.0", "0.4", "2.4", "5.0", "5.0"]  # T5: np.round(x * 5) / 5, halves to even
    assert train.targets == [0.1, 0.3, 2.5, 4.91, 5.0]
    write_tsv(tmp_path / "train.tsv", [header, ["0", "g", "f", "y", "o", "s", "s", "a", "b", "5.4"]])
    with pytest.raises(TaskInputError, match=r"'5.4'.*train.tsv line 2"):
        load_split("stsb", "train", data_dir=tmp_path)


def test_mnli_dev_matched_with_gold_label(tmp_path):
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
    row = ["0", "1", "1e", "g", "(", "(", "(", "(", "The cat sat.", "A cat is sitting.", "neutral", "contradiction"]
    write_tsv(tmp_path / "train.tsv", [header, row])
    write_tsv(tmp_path / "dev_matched.tsv", [header, row[:-1] + ["neutral"]])
    write_tsv(tmp_path / "dev_mismatched.tsv", [header, row[:-1] + ["entailment"]])
    dev = load_split("mnli", "validation", data_dir=tmp_path)
    assert dev.source["split"] == "dev_matched.tsv" and dev.labels == [1]
    assert dev.source["hub_split"] == "validation_matched"  # what a model card names, not the file
    assert dev.texts == ["mnli hypothesis: A cat is sitting. premise: The cat sat."]
    assert load_split("mnli", "train", data_dir=tmp_path).labels == [2]  # gold_label, not label1


def test_mrpc_bom_and_glue_column_names(tmp_path):
    text = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tOne.\tUno.\n0\t9\t10\tTwo.\tTres.\n"
    (tmp_path / "train.tsv").write_text(text, encoding="utf-8")
    train = load_split("mrpc", "train", data_dir=tmp_path)
    assert train.labels == [1, 0]
    assert train.texts[0] == "mrpc sentence1: One. sentence2: Uno."


MULTIRC = {
    "idx": 4,
    "version": 1.1,
    "passage": {
        "text": "Sam ate an apple. Then he slept.",
        "questions": [
            {"question": "What did Sam eat?", "idx": 0, "answers": [
                {"text": "an apple", "idx": 0, "label": 1}, {"text": "a pear", "idx": 1, "label": 0}]},
            {"question": "What then?", "idx": 1, "answers": [
                {"text": "he slept", "idx": 2, "label": 1}, {"text": "he ran", "idx": 3, "label": 0},
                {"text": "sleep", "idx": 4, "label": 1}]},
        ],
    },
}


def test_multirc_nested_jsonl_is_flattened_per_answer(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [MULTIRC])
    train = load_split("multirc", "train", data_dir=tmp_path)
    assert len(train) == 5
    assert train.labels == [1, 0, 1, 0, 1]
    assert train.groups == ["4/0", "4/0", "4/1", "4/1", "4/1"]
    assert train[2].fields == {"question": "What then?", "answer": "he slept",
                               "paragraph": "Sam ate an apple. Then he slept."}
    assert train.texts[0] == (
        "multirc question: What did Sam eat? answer: an apple paragraph: Sam ate an apple. Then he slept."
    )


def test_wsc_target_spans_and_boolean_labels(tmp_path):
    records = [{"text": "Mark told Pete he was wrong.", "target": {"span1_text": "Mark", "span1_index": 0,
                "span2_text": "he", "span2_index": 3}, "idx": i, "label": lab} for i, lab in enumerate([True, False])]
    write_jsonl(tmp_path / "val.jsonl", records)
    val = load_split("wsc", "validation", data_dir=tmp_path)
    assert val.labels == [1, 0]
    assert val.texts[0] == "wsc text: Mark told Pete he was wrong. span1_text: Mark span2_text: he"


CUSTOM_SPEC = {"name": "reviews", "template": "review: {text}", "label_words": ["bad", "good"],
               "label_column": "stars", "label_aliases": {"1": 0, "5": 1},
               "file_names": {"train": "tr.csv", "validation": "va.csv"}}


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_custom_csv_task_from_spec_file(tmp_path, suffix):
    if suffix == ".json":
        (tmp_path / "spec.json").write_text(json.dumps(CUSTOM_SPEC))
    else:
        (tmp_path / "spec.toml").write_text(
            'name = "reviews"\ntemplate = "review: {text}"\nlabel_words = ["bad", "good"]\nlabel_column = "stars"\n'
            'label_aliases = { "1" = 0, "5" = 1 }\nfile_names = { train = "tr.csv", validation = "va.csv" }\n')
    (tmp_path / "tr.csv").write_text('text,stars\n"Awful, truly.",1\nGreat,5\nfine,good\n')
    (tmp_path / "va.csv").write_text("text,stars\nmeh,1\n")
    spec = get_task(tmp_path / f"spec{suffix}")
    train = load_split(spec, "train")  # no data_dir: files next to the spec
    assert train.texts == ["review: Awful, truly.", "review: Great", "review: fine"]
    assert train.labels == [0, 1, 1]  # alias, alias, label word
    assert train.source["format"] == "csv" and train.source["split"] == "tr.csv"
    with pytest.raises(SplitNotFoundError, match="no test file"):
        load_split(spec, "test")


def test_missing_files_and_folders_name_them(rte_tsv, tmp_path):
    (rte_tsv / "dev.tsv").unlink()
    with pytest.raises(SplitNotFoundError, match=r"no validation file in .*dev\.tsv"):
        load_split("rte", "validation", data_dir=rte_tsv)
    with pytest.raises(TaskError, match="does not exist"):
        load_split("rte", "train", data_dir=tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TaskError, match=r"no data files in .*empty \(looked for"):
        load_split("rte", "train", data_dir=empty)
    with pytest.raises(TaskError, match="unknown split"):
        load_split("rte", "dev", data_dir=rte_tsv)


def test_missing_column_names_file_and_column(tmp_path):
    write_tsv(tmp_path / "train.tsv", [["index", "sentence1", "label"], ["0", "x", "entailment"]])
    with pytest.raises(TaskError, match=r"train\.tsv: missing column 'sentence2' for 'hypothesis'"):
        load_split("rte", "train", data_dir=tmp_path)
    write_tsv(tmp_path / "train.tsv", [["index", "sentence1", "sentence2"], ["0", "x", "y"]])
    with pytest.raises(TaskError, match="missing column 'label'"):  # only test may be unlabeled
        load_split("rte", "train", data_dir=tmp_path)
    write_jsonl(tmp_path / "train.jsonl", [{"premise": "p", "label": "entailment"}])
    with pytest.raises(TaskError, match=r"train\.jsonl line 1: missing column 'hypothesis'"):
        load_split("rte", "train", data_dir=tmp_path)


def test_label_outside_label_words_names_value_file_and_line(rte_tsv):
    write_tsv(rte_tsv / "train.tsv", [RTE_HEADER, ["0", "a", "b", "entailment"], ["1", "c", "d", "maybe"]])
    with pytest.raises(TaskInputError) as info:
        load_split("rte", "train", data_dir=rte_tsv)
    assert "'maybe'" in str(info.value) and "train.tsv line 3" in str(info.value)
    assert "entailment, not_entailment" in str(info.value)


def test_malformed_rows_are_one_line_errors(rte_tsv):
    write_tsv(rte_tsv / "train.tsv", [RTE_HEADER, ["0", "a", "b"]])
    with pytest.raises(TaskError, match=r"train\.tsv line 2: malformed row: 3 .* expected 4"):
        load_split("rte", "train", data_dir=rte_tsv)
    (rte_tsv / "train.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": "entailment"}\n{not json\n')
    with pytest.raises(TaskError, match=r"train\.jsonl line 2: not valid JSON") as info:
        load_split("rte", "train", data_dir=rte_tsv)
    assert "\n" not in str(info.value)


def test_max_samples_is_a_deterministic_seeded_subset(tmp_path):
    rows = [["index", "sentence", "label"]] + [[str(i), f"s{i}", str(i % 2)] for i in range(50)]
    write_tsv(tmp_path / "dev.tsv", [r[1:] for r in rows])  # SST-2 TSV: sentence, label
    full = load_split("sst2", "validation", data_dir=tmp_path)
    a = load_split("sst2", "validation", data_dir=tmp_path, max_samples=10, seed=3)
    b = load_split("sst2", "validation", data_dir=tmp_path, max_samples=10, seed=3)
    c = load_split("sst2", "validation", data_dir=tmp_path, max_samples=10, seed=4)
    assert a.texts == b.texts and len(a) == 10
    assert a.texts != c.texts
    assert set(a.texts) <= set(full.texts)
    assert a.texts == [t for t in full.texts if t in set(a.texts)]  # original order kept
    assert load_split("sst2", "validation", data_dir=tmp_path, max_samples=500).texts == full.texts
    with pytest.raises(TaskError, match="max_samples"):
        load_split("sst2", "validation", data_dir=tmp_path, max_samples=0)


def _sst2(tmp_path: Path, n_train: int, n_dev: int, test: str) -> Path:
    write_tsv(tmp_path / "train.tsv", [["sentence", "label"]] + [[f"t{i}", str(i % 2)] for i in range(n_train)])
    write_tsv(tmp_path / "dev.tsv", [["sentence", "label"]] + [[f"d{i}", str(i % 2)] for i in range(n_dev)])
    if test == "unlabeled":
        write_tsv(tmp_path / "test.tsv", [["index", "sentence"]] + [[str(i), f"x{i}"] for i in range(4)])
    elif test == "labeled":
        write_tsv(tmp_path / "test.tsv", [["sentence", "label"]] + [[f"x{i}", "1"] for i in range(4)])
    return tmp_path


def test_load_splits_keeps_a_labeled_test_split(tmp_path):
    splits = load_splits("sst2", data_dir=_sst2(tmp_path, 20, 6, "labeled"))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [20, 6, 4]
    assert splits["test"].texts[0] == "sst2 sentence: x0"


@pytest.mark.parametrize("test", ["unlabeled", "absent"])
def test_load_splits_halves_validation_for_small_train(tmp_path, test):
    official = load_split("sst2", "validation", data_dir=_sst2(tmp_path, 20, 7, test))
    splits = load_splits("sst2", data_dir=tmp_path, seed=1)
    val, tst = splits["validation"], splits["test"]
    assert len(splits["train"]) == 20 and (len(val), len(tst)) == (3, 4)
    assert val.split == "validation" and tst.split == "test" and tst.has_labels
    assert set(val.texts).isdisjoint(tst.texts) and set(val.texts) | set(tst.texts) == set(official.texts)
    again = load_splits("sst2", data_dir=tmp_path, seed=1)
    assert again["validation"].texts == val.texts
    assert "half" in tst.source["derived"]


def test_load_splits_holds_out_1000_train_examples_for_large_train(tmp_path):
    _sst2(tmp_path, 10_050, 8, "unlabeled")
    splits = load_splits("sst2", data_dir=tmp_path, max_eval=5, seed=2)
    full = load_splits("sst2", data_dir=tmp_path, seed=2)
    train, val = full["train"], full["validation"]
    assert (len(train), len(val)) == (9_050, 1_000)
    assert set(train.texts).isdisjoint(val.texts) and len(set(train.texts) | set(val.texts)) == 10_050
    assert full["test"].texts == [f"sst2 sentence: d{i}" for i in range(8)]  # the official validation
    assert (full["test"].source["hub_split"], val.source["hub_split"]) == ("validation", "train")
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (9_050, 5, 5)
    assert set(splits["validation"].texts) <= set(val.texts)


def test_load_splits_needs_train_and_validation(tmp_path):
    _sst2(tmp_path, 10, 4, "labeled")
    (tmp_path / "dev.tsv").unlink()
    with pytest.raises(TaskError, match="no validation file"):
        load_splits("sst2", data_dir=tmp_path)


class FakeDatasets:
    """Stands in for ``datasets.load_dataset`` (the Hub cannot be reached from tests)."""

    def __init__(self, rows=None, error=None):
        self.rows, self.error, self.calls = rows, error, []

    def __call__(self, path, name=None, *, split=None, revision=None):
        self.calls.append((path, name, split, revision))
        if self.error:
            raise self.error
        return list(self.rows)


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets
    import huggingface_hub

    def install(**kwargs):
        fake = FakeDatasets(**kwargs)
        monkeypatch.setattr(datasets, "load_dataset", fake)
        monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda *a, **k: (_ for _ in ()).throw(OSError()))
        return fake

    return install


def test_hub_path_maps_rows_and_unlabeled_test(fake_hub):
    fake = fake_hub(rows=[{"premise": "p", "hypothesis": "h", "label": -1, "idx": 0}])
    data = load_split("mnli", "test")
    assert fake.calls == [("nyu-mll/glue", "mnli", "test_matched", None)]
    assert data.texts == ["mnli hypothesis: h premise: p"] and not data.has_labels
    assert data.source == {"id": "nyu-mll/glue", "config": "mnli", "revision": None, "format": "hub",
                           "split": "test_matched", "hub_split": "test_matched", "num_examples": 1}
    fake_hub(rows=[{"paragraph": "P", "question": "Q", "answer": "A", "label": 1,
                    "idx": {"paragraph": 3, "question": 9, "answer": 0}}])
    assert load_split("multirc", "validation").groups == ["3/9"]


def test_hub_is_not_reached_with_a_data_dir_and_offline_failure_says_data_dir(fake_hub, rte_tsv):
    fake = fake_hub(error=ConnectionError("Couldn't reach 'aps/super_glue' on the Hub\n(OfflineModeIsEnabled)"))
    load_split("rte", "train", data_dir=rte_tsv)
    assert fake.calls == []
    with pytest.raises(TaskError) as info:
        load_split("rte", "train")
    assert "--data-dir" in str(info.value) and "\n" not in str(info.value)
    assert fake.calls == [("aps/super_glue", "rte", "train", None)]
    fake_hub(error=ValueError('Unknown split "test". Should be one of [\'train\'].'))
    with pytest.raises(SplitNotFoundError):
        load_split("rte", "test")


@pytest.mark.parametrize("module", [data_mod, sources_mod], ids=["data", "sources"])
def test_module_has_no_task_name_branches(module):
    # Per-task behaviour must be data in the catalogue, not code here.
    source = Path(module.__file__).read_text()
    for name in ("multirc", "wsc", "cola", "mnli", "stsb"):
        assert f'"{name}"' not in source
