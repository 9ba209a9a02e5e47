"""Backbone revisions through a real (offline) Hugging Face cache laid out as the Hub writes it:
the artifact records the commit a branch or tag resolved to, and ``--revision`` never applies to
a different ``--tokenizer`` repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from spp.prompts.backbone import BackboneError, load_backbone, resolved_commit

MODEL_COMMIT = "a" * 40
TOKENIZER_COMMIT = "b" * 40


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``me/t5`` (refs main and v1 -> one commit) and ``me/tok`` (main only), cached offline."""
    import huggingface_hub.constants
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    from spp.prompts.demo.toy import tiny_config

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    tok = ByT5Tokenizer()
    model = T5ForConditionalGeneration(tiny_config(len(tok), d_model=16, layers=1))
    for repo, commit, refs, parts in (("me--t5", MODEL_COMMIT, ("main", "v1"), (model, tok)),
                                      ("me--tok", TOKENIZER_COMMIT, ("main",), (model.config, tok))):
        for part in parts:
            part.save_pretrained(tmp_path / f"models--{repo}" / "snapshots" / commit)
        (tmp_path / f"models--{repo}" / "refs").mkdir()
        for ref in refs:
            (tmp_path / f"models--{repo}" / "refs" / ref).write_text(commit)
    return tmp_path


def test_the_resolved_commit_is_recorded_not_the_requested_revision(hub_cache: Path) -> None:
    assert load_backbone("me/t5", revision="v1", device="cpu").revision == MODEL_COMMIT
    assert load_backbone("me/t5", device="cpu").revision == MODEL_COMMIT
    assert resolved_commit("me/t5", "v1") == MODEL_COMMIT
    assert resolved_commit("me/unknown", "v1") == "v1"  # the cache cannot say: keep what was asked


def test_the_backbone_revision_is_not_applied_to_another_tokenizer_repo(hub_cache: Path) -> None:
    # me/tok has no v1: applying the backbone's revision to it would fail to load
    backbone = load_backbone("me/t5", revision="v1", tokenizer="me/tok", device="cpu")
    assert backbone.revision == MODEL_COMMIT and len(backbone.tokenizer) > 200
    with pytest.raises(BackboneError, match="cannot load T5 backbone 'me/t5'"):
        load_backbone("me/t5", revision="v2", device="cpu")


def test_a_local_directory_keeps_the_requested_revision(hub_cache: Path) -> None:
    local = hub_cache / "models--me--t5" / "snapshots" / MODEL_COMMIT
    assert load_backbone(str(local), device="cpu").revision is None
