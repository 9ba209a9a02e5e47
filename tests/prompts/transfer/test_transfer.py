"""The transfer matrix: equality with evaluate_prompt, relative shares, similarities, errors, report."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from pathlib import Path

import pytest
import torch
from scipy import stats

from spp.prompts.artifact import Artifact, ArtifactMeta
from spp.prompts.backbone import BackboneError
from spp.prompts.tasks import get_task
from spp.prompts.evaluate import evaluate_prompt
from spp.prompts.scoring import Scorer
from spp.prompts.tasks import TaskError
from spp.prompts.transfer import TransferConfig, TransferError, TransferSource, check_sources, compute_transfer, load_target, mean_cosine, rank_by_similarity, resolve_task, similarity_matrices, token_cosine, train_probe
from spp.prompts.transfer import report as transfer_report
from spp.prompts.transfer.report import TRANSFER_SCHEMA, heatmap_figure, heatmap_range, to_json_dict, validate

MOOD_WORDS = ("sad", "calm", "glad")


def write_mood_task(root: Path, *, splits=("train", "validation"), n: int = 40) -> Path:
    """A 3-label custom task (different label set from the demo tasks)."""
    folder = root / "mood"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    for split in splits:
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for _ in range(n):
                w.writerow([f"{rng.choice(['so', 'very', 'quite'])} {rng.choice(['day', 'night', 'room'])}",
                            rng.choice(MOOD_WORDS)])
    spec = {"name": "mood", "template": "{text}", "label_words": list(MOOD_WORDS), "metrics": ["accuracy", "macro_f1"],
            "file_format": "csv", "file_names": {s: f"{s}.csv" for s in splits}}
    path = folder / "task.json"
    path.write_text(json.dumps(spec))
    return path


def make_source(backbone, spec, label: str, *, n: int = 4, seed: int = 0, fingerprint: str | None = None):
    prompt = torch.randn(n, backbone.d_model, generator=torch.Generator().manual_seed(seed))  # (n, e)
    meta = ArtifactMeta(task=spec.name, method="simple", backbone=backbone.name,
                        fingerprint=fingerprint or backbone.fingerprint, d_model=backbone.d_model, n_tokens=n,
                        task_spec=spec.to_dict())
    return TransferSource(label, Artifact(prompt, meta), ref=f"{label}.safetensors")


@pytest.fixture(scope="module")
def specs(demo_data, tmp_path_factory):
    out = {name: get_task(path) for name, path in demo_data.items()}
    out["mood"] = get_task(write_mood_task(tmp_path_factory.mktemp("mood")))
    return out


@pytest.fixture(scope="module")
def targets(specs):
    return [load_target(specs[n], "validation", max_examples=30) for n in ("sentiment", "topic", "mood")]


@pytest.fixture(scope="module")
def sources(tiny_backbone, specs):
    # Different n per prompt, two prompts of the sentiment task (the first one is its own).
    return [
        make_source(tiny_backbone, specs["sentiment"], "sentiment@1", n=4, seed=1),
        make_source(tiny_backbone, specs["topic"], "topic@1", n=6, seed=2),
        make_source(tiny_backbone, specs["mood"], "mood@1", n=3, seed=3),
        make_source(tiny_backbone, specs["sentiment"], "sentiment@2", n=5, seed=4),
    ]


@pytest.fixture(scope="module")
def result(tiny_backbone, sources, targets):
    return compute_transfer(tiny_backbone, sources, targets, TransferConfig(batch_size=5, top_k=2))


# ------------------------------------------------------------------------------ the matrix
def test_every_entry_equals_a_separate_evaluate_prompt_run(tiny_backbone, sources, targets, result):
    scorer = Scorer(tiny_backbone)
    for i, s in enumerate(sources):
        for j, data in enumerate(targets):
            alone = evaluate_prompt(scorer, s.prompt, data)
            assert result.metrics[i][j] == alone, (s.label, data.task.name)
            assert result.raw[i][j] == sum(alone.values()) / len(alone)


def test_different_label_sets_get_their_own_metrics(result):
    assert [set(row[2]) for row in result.metrics] == [{"accuracy", "macro_f1"}] * 4
    assert all(set(row[0]) == {"accuracy"} for row in result.metrics)


def test_relative_is_share_of_own_prompt_with_exact_one_on_the_own_cell(result):
    assert result.own == [0, 1, 2]  # the first prompt of each task; sentiment@2 is not "own"
    for j, o in enumerate(result.own):
        assert result.relative[o][j] == 1.0
        for i in range(len(result.sources)):
            if i != o:
                assert result.relative[i][j] == pytest.approx(result.raw[i][j] / result.raw[o][j], rel=1e-12)
    assert result.notes == [None, None, None]
    assert result.rows == 4 * 3 * 30


def test_target_without_own_prompt_has_null_relative_and_a_note(tiny_backbone, sources, targets):
    res = compute_transfer(tiny_backbone, sources[:2] + sources[3:], targets)  # no mood prompt
    assert res.own[2] is None
    assert [row[2] for row in res.relative] == [None, None, None]
    assert "no source prompt was trained on mood" in res.notes[2]
    assert res.relative[0][0] == 1.0


def test_top_k_leaves_out_prompts_of_the_target_task_and_sorts_by_score(result):
    for j, t in enumerate(result.targets):
        best = result.top_k[j]
        assert len(best) == min(2, sum(s.task != t.task.name for s in result.sources))
        assert all(result.sources[i].task != t.task.name for i in best)
        scores = [result.raw[i][j] for i in best]
        assert scores == sorted(scores, reverse=True)
    assert 0 not in result.top_k[0] and 3 not in result.top_k[0]  # both sentiment prompts


def test_compile_goes_through_torch_compile_and_changes_no_metric(tiny_backbone, sources, targets, result,
                                                                   monkeypatch):
    """--compile reaches the scorer: encoder and decoder go through torch.compile (here an
    identity stand-in: tests/prompts/test_compiled.py compiles for real), metrics unchanged."""
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    again = compute_transfer(tiny_backbone, sources, targets, TransferConfig(batch_size=5, top_k=2, compile=True))
    assert [kw["dynamic"] for kw in compiled] == [True, True]
    assert again.metrics == result.metrics


@pytest.mark.parametrize(("compile", "extra_rows", "want"), [(None, -1, False), (None, 0, None), (True, -7990, True),
                                                             (False, 10**6, False)])
def test_compile_by_default_only_for_matrices_that_repay_it(compile, extra_rows, want):
    """None (the default): compiled where the forwards run unpadded (Scorer(compile=None)) once
    the matrix has AUTO_COMPILE_ROWS rows; an explicit choice always wins."""
    from spp.prompts.transfer.compute import AUTO_COMPILE_ROWS

    rows = AUTO_COMPILE_ROWS + extra_rows
    assert TransferConfig(compile=compile).compiles(rows) is want


@pytest.mark.parametrize("over", [0, 1])
def test_the_default_compiles_a_matrix_of_auto_compile_rows(tiny_backbone, sources, targets, result, monkeypatch,
                                                            over):
    """compile=None through compute_transfer: this matrix compiles once the threshold is its
    own row count, not when the threshold is one more; the metrics are the same either way."""
    import torch

    from spp.prompts.transfer import compute

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    monkeypatch.setattr(compute, "AUTO_COMPILE_ROWS", len(sources) * sum(len(t) for t in targets) + over)
    again = compute_transfer(tiny_backbone, sources, targets, TransferConfig(batch_size=5, top_k=2))
    assert len(compiled) == (0 if over else 2)
    assert again.metrics == result.metrics


@pytest.mark.parametrize("shards", [1, 3])
def test_shards_change_no_metric(tiny_backbone, sources, targets, result, shards):
    """The default splits each batch into 2 shards on a 2-core CPU; any count scores the same."""
    again = compute_transfer(tiny_backbone, sources, targets, TransferConfig(batch_size=5, top_k=2, shards=shards))
    assert again.metrics == result.metrics


def test_progress_reports_every_row(tiny_backbone, sources, targets):
    seen = []
    compute_transfer(tiny_backbone, sources[:2], targets[:1], TransferConfig(batch_size=7), progress=seen.append)
    assert sum(seen) == 2 * 30 and max(seen) <= 7


# ------------------------------------------------------------------------------ similarities
def test_similarities_closed_form_for_prompts_of_different_length():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (2, 2)
    b = torch.tensor([[3.0, 0.0]])  # (1, 2)
    assert mean_cosine(a, b) == pytest.approx(1 / math.sqrt(2))  # cos([.5, .5], [1, 0])
    assert token_cosine(a, b) == pytest.approx(0.5)  # mean(cos(a1, b), cos(a2, b)) = (1 + 0) / 2
    assert token_cosine(b, a) == pytest.approx(0.5)
    assert token_cosine(a, a) == pytest.approx(0.5)  # all pairs: (1 + 0 + 0 + 1) / 4, not 1
    assert mean_cosine(a, 7 * a) == pytest.approx(1.0)  # scale free


def test_similarity_matrices_are_symmetric_with_unit_mean_cosine_diagonal(result):
    for name, m in result.similarity.items():
        t = torch.tensor(m)
        torch.testing.assert_close(t, t.T)
    assert [result.similarity["mean_cosine"][i][i] for i in range(4)] == pytest.approx([1.0] * 4)
    assert similarity_matrices([s.prompt for s in result.sources]) == result.similarity


def test_correlation_matches_scipy_on_the_documented_pairs(result):
    xs, ys = [], []
    for j, t in enumerate(result.targets):
        o = result.own[j]
        for i, s in enumerate(result.sources):
            if s.task != t.task.name:
                xs.append(result.similarity["token_cosine"][i][o])
                ys.append(result.relative[i][j])
    corr = result.correlation["token_cosine"]
    assert corr.n_pairs == len(xs) == 2 + 3 + 3
    assert corr.spearman == pytest.approx(stats.spearmanr(xs, ys).statistic)
    assert corr.pearson == pytest.approx(stats.pearsonr(xs, ys).statistic)


def test_correlation_with_too_few_pairs_is_null_with_a_note(tiny_backbone, sources, targets):
    res = compute_transfer(tiny_backbone, sources[:2], targets[:1])
    corr = res.correlation["mean_cosine"]
    assert corr.n_pairs == 1 and corr.spearman is None and "need at least 3" in corr.note


def test_rank_by_similarity_puts_the_closest_prompt_first(tiny_backbone, sources):
    probe = sources[1].prompt[:2] * 3  # two tokens of topic@1, rescaled
    recs = rank_by_similarity(probe, sources)
    assert recs[0].label == "topic@1"
    assert [r.mean_cosine for r in recs] == sorted((r.mean_cosine for r in recs), reverse=True)
    by_token = rank_by_similarity(probe, sources, by="token_cosine")
    assert [r.token_cosine for r in by_token] == sorted((r.token_cosine for r in by_token), reverse=True)
    with pytest.raises(TransferError, match="by must be"):
        rank_by_similarity(probe, sources, by="euclid")


def test_train_probe_returns_a_trained_prompt(tiny_backbone, specs):
    data = load_target(specs["topic"], "train", max_examples=32)
    one = train_probe(tiny_backbone, data, steps=1, n_tokens=3, seed=0)
    three = train_probe(tiny_backbone, data, steps=3, n_tokens=3, seed=0)
    assert one.shape == three.shape == (3, tiny_backbone.d_model)
    assert not torch.equal(one, three)
    with pytest.raises(TransferError, match="probe steps"):
        train_probe(tiny_backbone, data, steps=0)


# ------------------------------------------------------------------------------ errors
def test_prompts_from_different_backbones_are_refused(tiny_backbone, specs, sources, targets):
    alien = make_source(tiny_backbone, specs["topic"], "alien@1", fingerprint="sha256:" + "ab" * 32)
    with pytest.raises(TransferError, match="different backbones.*alien@1"):
        compute_transfer(tiny_backbone, [sources[0], alien], targets)


def test_prompts_of_another_backbone_than_the_loaded_one_are_refused(tiny_backbone, specs, targets):
    fp = "sha256:" + "cd" * 32
    both = [make_source(tiny_backbone, specs[n], f"{n}@1", fingerprint=fp) for n in ("sentiment", "topic")]
    with pytest.raises(BackboneError, match="sentiment@1 was trained on a different backbone"):
        compute_transfer(tiny_backbone, both, targets)


def test_a_single_prompt_is_refused(tiny_backbone, sources, targets):
    with pytest.raises(TransferError, match="at least 2 source prompts, got 1 \\(sentiment@1\\)"):
        compute_transfer(tiny_backbone, sources[:1], targets)


def test_duplicate_labels_and_targets_are_refused(tiny_backbone, sources, targets):
    with pytest.raises(TransferError, match="unique; repeated: sentiment@1"):
        check_sources([sources[0], sources[0]])
    with pytest.raises(TransferError, match="repeated: topic"):
        compute_transfer(tiny_backbone, sources, [targets[1], targets[1]])


def test_a_task_without_evaluation_data_is_a_clear_error(tmp_path):
    spec = get_task(write_mood_task(tmp_path, splits=("train",)))
    with pytest.raises(TransferError, match="task mood has no validation data"):
        load_target(spec, "validation")


def test_an_unlabeled_split_is_a_clear_error(tmp_path):
    folder = write_mood_task(tmp_path, splits=("train",)).parent
    (folder / "test.csv").write_text("text,label\nso day,\n")
    spec = get_task(str(folder / "task.json"))
    with pytest.raises(TransferError, match="split has unlabeled examples"):
        load_target(spec, "test")


def test_data_dir_may_hold_one_folder_per_task(tmp_path, specs):
    write_mood_task(tmp_path / "all")
    data = load_target(specs["mood"], "validation", data_dir=tmp_path / "all")
    mood_file = tmp_path / "all" / "mood" / data.source["split"]
    assert len(data) == 40 and data.source["id"] == "local:mood"
    assert data.source["sha256"] == hashlib.sha256(mood_file.read_bytes()).hexdigest()


def test_resolve_task_uses_the_spec_recorded_in_an_artifact(sources):
    assert resolve_task("mood", sources).label_words == MOOD_WORDS
    assert resolve_task("rte", sources).name == "rte"
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        resolve_task("nope", sources)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("top_k", -1), ("max_source_length", 1.5),
                                         ("compile", "yes"), ("shards", 0), ("shards", "2")])
def test_config_names_the_bad_field(field, value):
    with pytest.raises(TransferError, match=field):
        TransferConfig(**{field: value})


# ------------------------------------------------------------------------------ report
def test_report_files_and_json_schema(result, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    paths = transfer_report.write_report(result, tmp_path, top_k=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["transfer.json", "transfer.schema.json", "transfer.csv", "report.md", "heatmap.png"])
    doc = json.loads(paths["transfer.json"].read_text())
    schema = json.loads(paths["transfer.schema.json"].read_text())
    assert schema == TRANSFER_SCHEMA
    jsonschema.validate(doc, schema)
    assert doc["raw"] == result.raw and doc["relative"] == result.relative
    assert [t["own_source"] for t in doc["targets"]] == ["sentiment@1", "topic@1", "mood@1"]
    assert doc["top_k"]["by_target"]["sentiment"][0]["source"] == result.sources[result.top_k[0][0]].label
    md = paths["report.md"].read_text()
    assert "| sentiment@2 |" in md and "![transfer heatmap](heatmap.png)" in md


def test_schema_rejects_a_broken_document(result):
    doc = to_json_dict(result)
    validate(doc)
    bad = json.loads(json.dumps(doc))
    bad["relative"][0][0] = "high"
    with pytest.raises(TransferError, match="relative/0/0"):
        validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["raw"][0].pop()
    with pytest.raises(TransferError, match="raw must be 4 x 3"):
        validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["relative"][0][0] = 0.99
    with pytest.raises(TransferError, match="must be 1.0"):
        validate(bad)


def test_csv_has_one_row_per_source_and_target(result, tmp_path):
    path = tmp_path / "t.csv"
    transfer_report.write_csv(result, path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4 * 3
    mood = [r for r in rows if r["target"] == "mood"]
    assert all(r["macro_f1"] for r in mood) and all(r["macro_f1"] == "" for r in rows if r["target"] != "mood")
    own = [(r["source"], r["target"]) for r in rows if r["own_prompt"] == "1"]
    assert own == [("sentiment@1", "sentiment"), ("topic@1", "topic"), ("mood@1", "mood")]
    assert float(rows[1]["score"]) == result.raw[0][1]


def test_heatmap_png_has_one_cell_per_source_and_target(result, tmp_path):
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from PIL import Image

    path = transfer_report.write_heatmap(result, tmp_path / "h.png")
    fig = heatmap_figure(result)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "target task" and ax.get_ylabel() == "source prompt"
    assert [t.get_text() for t in ax.get_xticklabels()] == result.target_names
    assert [t.get_text() for t in ax.get_yticklabels()] == result.source_labels
    assert ax.images[0].get_array().shape == (4, 3)
    assert len([t for t in ax.texts if t.get_text()]) == 4 * 3
    png = Image.open(path).convert("RGB")
    assert png.size == (round(fig.get_figwidth() * 100), round(fig.get_figheight() * 100))
    cmap, norm = colormaps[transfer_report.CMAP], Normalize(*heatmap_range(result))
    height = png.size[1]
    for i in range(4):
        for j in range(3):
            # A point inside cell (i, j) away from its centred text and from the red own-prompt frame.
            x, y = ax.transData.transform((j - 0.3, i + 0.3))
            got = png.getpixel((int(x), int(height - y)))
            want = tuple(round(255 * c) for c in cmap(norm(result.raw[i][j]))[:3])
            assert max(abs(g - w) for g, w in zip(got, want)) <= 3, (i, j, got, want)
