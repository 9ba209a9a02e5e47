"""Rank classification: score every candidate label under the decoder and take the best.

The encoder runs once per example. The candidates of one example are then packed into ONE
decoder sequence, ``[<s> c1 ... | <s> c2 ... | ...]``, with a block-diagonal causal mask: each
candidate attends only to its own tokens, and because T5's decoder position bias depends only
on relative distance, every candidate scores exactly as if decoded alone. So a batch needs one
decoder pass of B rows, with no copy of the encoder states per candidate, and rows of a batch
may carry different prompts (any n) and different label sets: the server and the transfer
evaluator mix tasks in one batch through :meth:`Scorer.score`.

On a CPU, a T5 backbone's forwards run unpadded (spp.prompts.packed): projections and feed-forward
blocks on the real tokens only, attention per group of rows of similar length; ``compile``
fuses their per-token sublayers (spp.prompts.compiled). Any other model, or a GPU, runs
transformers' own padded forwards, which ``compile=True`` compiles whole.

Log-probabilities are ``logit[target] - logsumexp(logits)``, computed only at the real (non-
padding) decoder positions: their decoder states are gathered before ``lm_head``, so no logit
of a padding position is ever built and no full-vocabulary log-softmax is materialised. A
candidate's score is the sum of its token log-probabilities (EOS included).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from spp.prompts.backbone import Backbone, prepend_prompts
from spp.prompts import packed as packed_t5
from spp.prompts.compiled import GuardedCompile, compiled_sublayers


@dataclass(frozen=True)
class LabelSet:
    """The candidate label words of a task and their token ids (each ending in EOS)."""

    words: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, backbone: Backbone, words: Sequence[str]) -> "LabelSet":
        return cls(tuple(words), tuple(tuple(t) for t in backbone.label_token_ids(words)))


@dataclass
class Scores:
    """Per-row candidate log-likelihoods (B, K) with -inf where a row has fewer candidates."""

    loglik: torch.Tensor  # (B, K)
    sizes: list[int]

    @property
    def preds(self) -> list[int]:
        return self.loglik.argmax(dim=1).tolist()

    def probs(self) -> list[list[float]]:
        """Softmax over each row's own candidates (what the server reports)."""
        p = torch.softmax(self.loglik.float(), dim=1)  # (B, K)
        return [row[:k].tolist() for row, k in zip(p, self.sizes)]


# (texts, prompts, label sets) -> Scores: Scorer.score, or anything standing in for it (a
# spp.prompts.parallel.ShardedScore of it; the server's batcher and the evaluators take one)
ScoreFn = Callable[[Sequence[str], "torch.Tensor | Sequence[torch.Tensor]", "LabelSet | Sequence[LabelSet]"], Scores]


@dataclass
class Encoded:
    """Encoder output: (B, T, e) padded states, or (N, e) real-token states and their layout."""

    states: torch.Tensor
    mask: torch.Tensor  # (B, T) 1 on real positions, prompt included
    layout: packed_t5.Layout | None = None

    def padded(self) -> torch.Tensor:
        """The states as (B, T, e), zeros at padding (for references and tools)."""
        if self.layout is None:
            return self.states
        B, T = self.mask.shape
        out = self.states.new_zeros(B * T, self.states.shape[-1])
        return out.index_copy_(0, self.layout.index, self.states).view(B, T, -1)  # (B, T, e)


class Scorer:
    """Scores texts with per-row prompts and label sets on a frozen backbone.

    Safe to call from several threads at once (the server scores concurrent batches): the
    model is only read, and no two threads tokenize with the same tokenizer at once.
    """

    def __init__(
        self, backbone: Backbone, *, max_source_length: int = 512, compile: bool | None = False,
        packed: bool | None = None,
    ) -> None:
        self.backbone = backbone
        # packed (None: automatic): unpadded forwards (spp.prompts.packed) for a T5 they reproduce,
        # on a CPU, where they were measured
        if packed is None:
            packed = backbone.device.type == "cpu" and packed_t5.supports(backbone.model)
        self.packed = packed
        self.max_source_length = max_source_length
        self._pack_cache: dict[tuple, tuple] = {}  # label set -> packed decoder row
        self._owner = threading.get_ident()
        self._encoder, self._decoder = backbone.model.get_encoder(), backbone.model.get_decoder()
        self._sublayers = packed_t5.EAGER
        # compile (spp.prompts.compiled; eager if it fails): the unpadded encoder's per-token
        # sublayers (seconds to compile), else transformers' whole encoder and decoder (tens of
        # seconds); None: only the former, where it measured faster
        if compile is None:
            compile = packed
        if compile and packed:
            self._sublayers = compiled_sublayers()
        elif compile:
            self._encoder = GuardedCompile(self._encoder, "encoder")
            self._decoder = GuardedCompile(self._decoder, "decoder")

    @property
    def compiled(self) -> bool:
        """Whether the forwards run compiled (False when not asked, or after a compile failure)."""
        parts = (self._sublayers.attention_inputs, self._sublayers.feed_forward, self._encoder, self._decoder)
        guarded = [f for f in parts if isinstance(f, GuardedCompile)]
        return bool(guarded) and all(f.failure is None for f in guarded)

    def warm_up(self) -> None:
        """Score two tiny batches (2 rows, then 1) so compiling happens now, not on a request."""
        labels = LabelSet(("a", "b"), ((3, 1), (4, 5, 1)))
        prompt = torch.zeros(2, self.backbone.d_model)
        for texts in (["warm up", "warm up the compiled forwards"], ["warm up"]):
            self.score(texts, prompt, labels)

    @contextmanager
    def _tokenizer(self) -> Iterator[object]:
        """The backbone's tokenizer on the thread that built the scorer, a copy lent by the
        backbone's pool on any other (spp.prompts.backbone.TokenizerPool: why, and the cost)."""
        if threading.get_ident() == self._owner:
            yield self.backbone.tokenizer
            return
        with self.backbone.tokenizers.borrow() as tok:
            yield tok

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with self._tokenizer() as tok:
            enc = tok(list(texts), padding=True, truncation=True, max_length=self.max_source_length,
                      return_tensors="pt")
        dev = self.backbone.device
        return enc["input_ids"].to(dev), enc["attention_mask"].to(dev)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompts: torch.Tensor | Sequence[torch.Tensor],
    ) -> Encoded:
        """Run the encoder on ``[prompt | tokens]`` (unpadded where :attr:`packed`)."""
        embeds = self.backbone.model.get_input_embeddings()(input_ids)  # (B, L, e)
        if isinstance(prompts, torch.Tensor):
            prompts = prompts.to(embeds.device)  # per-row prompts are moved by prepend_prompts, once each
        inputs, mask = prepend_prompts(embeds, attention_mask, prompts)  # (B, T, e), (B, T)
        if self.packed:
            layout = packed_t5.plan(mask)
            return Encoded(packed_t5.encode(self._encoder, inputs, layout, self._sublayers), mask, layout)  # (N, e)
        return Encoded(self._encoder(inputs_embeds=inputs, attention_mask=mask).last_hidden_state, mask)

    def candidate_loglik(self, encoded: Encoded, label_sets: Sequence[LabelSet]) -> Scores:
        """One decoder pass over all candidates of all rows (see module docstring).

        Only the decoder states of real (non-padding) positions go through ``lm_head``, so no
        logit is built for a padding position and the vocabulary normaliser (logsumexp, in
        float32) runs once per scored token.
        """
        states, device = encoded.states, encoded.states.device
        packed = _pack_candidates(label_sets, self.backbone, device, self._pack_cache)
        model = self.backbone.model
        bias = packed_t5.additive_mask(packed.allowed, states.dtype).unsqueeze(1)  # (B, 1, D, D)
        if encoded.layout is not None:
            hidden = packed_t5.decode(self._decoder, packed.inputs, bias, states, encoded.layout)  # (B, D, e)
        else:
            hidden = self._decoder(
                input_ids=packed.inputs,
                attention_mask=bias,  # prepared 4D mask
                encoder_hidden_states=states,
                encoder_attention_mask=encoded.mask,
                use_cache=False,
            ).last_hidden_state  # (B, D, e)
        real = hidden[packed.valid]  # (N, e): N scored tokens, padding dropped
        if model.config.scale_decoder_outputs:  # tied-embedding T5 (v1.0) rescales before lm_head
            real = real * (model.model_dim**-0.5)
        logits = model.lm_head(real)  # (N, V)
        target = logits.gather(1, packed.targets[packed.valid].unsqueeze(1)).squeeze(1).float()  # (N,)
        token_lp = target - log_normalizer(logits)  # (N,)
        B, K = encoded.mask.shape[0], packed.k_max
        slot = packed.row_slot[packed.valid]  # (N,) row * K + candidate
        sums = token_lp.new_zeros(B * K).index_add_(0, slot, token_lp).view(B, K)  # (B, K)
        loglik = sums.masked_fill(~packed.has_candidate, float("-inf"))  # (B, K)
        return Scores(loglik=loglik, sizes=packed.sizes)

    @torch.no_grad()
    def score(
        self,
        texts: Sequence[str],
        prompts: torch.Tensor | Sequence[torch.Tensor],
        label_sets: LabelSet | Sequence[LabelSet],
    ) -> Scores:
        """Score one batch. ``prompts``/``label_sets``: one for all rows, or one per row."""
        if isinstance(label_sets, LabelSet):
            label_sets = [label_sets] * len(texts)
        ids, mask = self.tokenize(texts)
        return self.candidate_loglik(self.encode(ids, mask, prompts), label_sets)

    @torch.no_grad()
    def generate(
        self, texts: Sequence[str], prompt: torch.Tensor, labels: LabelSet, max_new_tokens: int | None = None
    ) -> list[str]:
        """Free decoding with the prompt (the paper's protocol); returns the decoded strings."""
        model = self.backbone.model
        ids, mask = self.tokenize(texts)
        embeds = model.get_input_embeddings()(ids)  # (B, L, e)
        inputs, full_mask = prepend_prompts(embeds, mask, prompt.to(embeds.device))
        limit = max_new_tokens or max(len(t) for t in labels.token_ids) + 2
        out = model.generate(inputs_embeds=inputs, attention_mask=full_mask, max_new_tokens=limit, do_sample=False)
        with self._tokenizer() as tok:
            return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]


EXP_FLOOR = -87.0  # exp() below this underflows float32 to a subnormal or 0


def log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last dim in float32, for (N, V) logits; returns (N,).

    Equal to ``torch.logsumexp`` in float32: terms more than 87 below the row's maximum are
    raised to ``exp(-87)`` first, which changes the sum by at most V * 1.6e-38 while the sum is
    at least 1. It matters for speed: exp() of an argument that underflows takes a slow scalar
    path on x86 CPUs (measured: 55 ms vs 1.2 ms for 2.6M such values), and the wide logits of
    a badly scaled or random head put most of a 32k vocabulary there.
    """
    x = logits.float()  # (N, V): finite, as lm_head outputs are
    peak = x.amax(dim=-1, keepdim=True)  # (N, 1)
    total = (x - peak).clamp_(min=EXP_FLOOR).exp_().sum(dim=-1)  # (N,)
    return total.log_() + peak.squeeze(-1)


@dataclass
class _Packed:
    inputs: torch.Tensor  # (B, D) decoder input ids
    targets: torch.Tensor  # (B, D) ids to score
    valid: torch.Tensor  # (B, D) bool, True on real positions
    row_slot: torch.Tensor  # (B, D) row * K + candidate index of each position (padding: unused)
    allowed: torch.Tensor  # (B, D, D) same candidate and causal
    has_candidate: torch.Tensor  # (B, K)
    sizes: list[int]
    k_max: int


def _pack_row(label_set: LabelSet, start_id: int, cache: dict) -> tuple[list[int], list[int], list[int]]:
    """Decoder inputs, targets and segment ids of one row; cached per label set."""
    key = (label_set.token_ids, start_id)
    hit = cache.get(key)
    if hit is None:
        inputs: list[int] = []
        targets: list[int] = []
        segs: list[int] = []
        for k, ids in enumerate(label_set.token_ids):
            inputs += [start_id, *ids[:-1]]  # teacher forcing: shift right
            targets += list(ids)
            segs += [k] * len(ids)
        if len(cache) > 4096:  # bounded: label sets are few, this is only a guard
            cache.clear()
        hit = cache[key] = (inputs, targets, segs)
    return hit


def _pack_candidates(
    label_sets: Sequence[LabelSet], backbone: Backbone, device: torch.device, cache: dict
) -> _Packed:
    start = int(backbone.model.config.decoder_start_token_id)
    pad = int(backbone.model.config.pad_token_id)
    rows = [_pack_row(ls, start, cache) for ls in label_sets]
    sizes = [len(ls.token_ids) for ls in label_sets]
    B, D, K = len(rows), max(len(r[0]) for r in rows), max(sizes)
    inputs = torch.full((B, D), pad, dtype=torch.long)
    targets = torch.full((B, D), pad, dtype=torch.long)
    segment = torch.full((B, D), K, dtype=torch.long)
    for i, (inp, tgt, seg) in enumerate(rows):
        inputs[i, : len(inp)] = torch.tensor(inp)
        targets[i, : len(tgt)] = torch.tensor(tgt)
        segment[i, : len(seg)] = torch.tensor(seg)
    valid = segment < K  # (B, D)
    pos = torch.arange(D)
    causal = pos.unsqueeze(0) <= pos.unsqueeze(1)  # (D, D): key <= query
    same = segment.unsqueeze(2) == segment.unsqueeze(1)  # (B, D, D)
    # Padding positions attend to themselves only, so no softmax row is empty (no NaN).
    allowed = (same & causal & valid.unsqueeze(1)) | torch.eye(D, dtype=torch.bool)
    sizes_t = torch.tensor(sizes)
    has = torch.arange(K).unsqueeze(0) < sizes_t.unsqueeze(1)  # (B, K)
    return _Packed(
        inputs=inputs.to(device),
        targets=targets.to(device),
        valid=valid.to(device),
        row_slot=(torch.arange(B).unsqueeze(1) * K + segment.clamp(max=K - 1)).to(device),
        allowed=allowed.to(device),
        has_candidate=has.to(device),
        sizes=sizes,
        k_max=K,
    )


ProgressFn = Callable[[int], None]


def iter_batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


@torch.no_grad()
def score_texts(
    scorer: Scorer,
    texts: Sequence[str],
    prompt: torch.Tensor,
    labels: LabelSet,
    *,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    score: ScoreFn | None = None,
) -> tuple[list[int], list[list[float]]]:
    """Predicted label ids and per-label probabilities for many texts with one prompt.

    Texts are sorted by length so batches pad little; results come back in input order. Each
    batch goes through ``score`` (default ``scorer.score``; e.g. a spp.prompts.parallel.ShardedScore).
    """
    score = score or scorer.score
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    preds: list[int] = [0] * len(texts)
    probs: list[list[float]] = [[]] * len(texts)
    for a, b in iter_batches(len(order), batch_size):
        idx = order[a:b]
        scores = score([texts[i] for i in idx], prompt, labels)
        for i, p, pr in zip(idx, scores.preds, scores.probs()):
            preds[i], probs[i] = p, pr
        if progress:
            progress(b - a)
    return preds, probs
