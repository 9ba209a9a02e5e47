"""torch.compile of the scorer's forwards: the same scores as eager, and a failure falls back."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from spp.prompts.scoring import LabelSet, Scorer

TEXTS = ["a short one", "a somewhat longer input text with more words in it", "mid length text"]


def _inputs(backbone):
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randn(n, backbone.d_model, generator=gen) for n in (3, 5, 4)]
    labels = [LabelSet.build(backbone, w) for w in (["yes", "no"], ["red", "green", "blue"], ["yes", "no"])]
    return prompts, labels


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="Inductor on CPU needs a C++ compiler")
def test_compiled_scores_equal_eager_for_any_batch_shape(tiny_backbone) -> None:
    """One dynamic-shape graph serves batches of 3 and 1 rows, of different lengths and prompts."""
    prompts, labels = _inputs(tiny_backbone)
    eager, compiled = Scorer(tiny_backbone), Scorer(tiny_backbone, compile=True)
    compiled.warm_up()
    assert compiled.compiled
    for rows in (slice(0, 3), slice(1, 2)):
        want = eager.score(TEXTS[rows], prompts[rows], labels[rows]).loglik
        got = compiled.score(TEXTS[rows], prompts[rows], labels[rows]).loglik
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_compile_failure_falls_back_to_eager_once(tiny_backbone, monkeypatch, caplog) -> None:
    """No C++ compiler, an unsupported op...: logged once per forward, and every call still answers."""
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            calls.append(1)
            raise RuntimeError("inductor: no working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    prompts, labels = _inputs(tiny_backbone)
    scorer = Scorer(tiny_backbone, compile=True)
    with caplog.at_level(logging.WARNING, logger="spp.prompts.compiled"):
        first = scorer.score(TEXTS, prompts, labels).loglik
        second = scorer.score(TEXTS, prompts, labels).loglik
    want = Scorer(tiny_backbone).score(TEXTS, prompts, labels).loglik
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(second, want)
    assert not scorer.compiled and len(calls) == 2  # encoder and decoder tried once each, then eager
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("no working C++ compiler" in w for w in warnings)

