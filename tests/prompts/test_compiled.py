"""torch.compile of the scorer's forwards: the same scores as eager, and a failure falls back."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from spp.prompts.compiled import GuardedCompile
from spp.prompts.scoring import LabelSet, Scorer

TEXTS = ["a short one", "a somewhat longer input text with more words in it", "mid length text"]


def _inputs(backbone):
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randn(n, backbone.d_model, generator=gen) for n in (3, 5, 4)]
    labels = [LabelSet.build(backbone, w) for w in (["yes", "no"], ["red", "green", "blue"], ["yes", "no"])]
    return prompts, labels


NEEDS_CXX = pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                               reason="Inductor on CPU needs a C++ compiler")


@NEEDS_CXX
@pytest.mark.parametrize("packed", [True, False], ids=["unpadded-sublayers", "padded-whole"])
def test_compiled_scores_equal_eager_for_any_batch_shape(tiny_backbone, packed: bool) -> None:
    """One dynamic-shape graph serves batches of 3 and 1 rows, of different lengths and prompts:
    the unpadded forwards' per-token sublayers, or transformers' whole padded forwards."""
    prompts, labels = _inputs(tiny_backbone)
    eager, compiled = Scorer(tiny_backbone, packed=packed), Scorer(tiny_backbone, compile=True, packed=packed)
    compiled.warm_up()
    assert compiled.compiled and compiled.packed is packed
    for rows in (slice(0, 3), slice(1, 2)):
        want = eager.score(TEXTS[rows], prompts[rows], labels[rows]).loglik
        got = compiled.score(TEXTS[rows], prompts[rows], labels[rows]).loglik
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@NEEDS_CXX
def test_one_graph_per_sublayer_serves_every_layer_and_batch(tiny_backbone) -> None:
    """Dynamo compiles each per-token sublayer once (dynamic token count; the layers' weights are
    inputs, not guards), so no recompiles across the encoder's layers or batches."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    prompts, labels = _inputs(tiny_backbone)
    scorer = Scorer(tiny_backbone, compile=True)
    for rows in (slice(0, 3), slice(1, 2), slice(0, 2)):
        scorer.score(TEXTS[rows], prompts[rows], labels[rows])
    assert scorer.compiled and tiny_backbone.model.config.num_layers > 1
    assert not counters["recompiles"] and counters["frames"]["ok"] <= 4, dict(counters["frames"])


def test_compile_default_is_only_where_it_is_cheap(tiny_backbone) -> None:
    """compile=None (the server's default) compiles the unpadded forwards' sublayers, never
    transformers' whole padded forwards (tens of seconds)."""
    assert not Scorer(tiny_backbone).compiled  # the library default: eager
    auto = Scorer(tiny_backbone, compile=None)
    assert auto.packed and isinstance(auto._sublayers.feed_forward, GuardedCompile)
    # the C++ wrapper releases the GIL while the sublayers run, so shard threads overlap
    sublayers = (auto._sublayers.feed_forward, auto._sublayers.attention_inputs)
    assert all(f.options == {"cpp_wrapper": True} for f in sublayers)
    padded = Scorer(tiny_backbone, compile=None, packed=False)
    assert not padded.compiled and not isinstance(padded._encoder, GuardedCompile)


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
    assert not scorer.compiled and len(calls) == 2  # both sublayers tried once each, then eager
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("no working C++ compiler" in w for w in warnings)

