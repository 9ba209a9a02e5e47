"""Unpadded ("packed") T5 forwards for scoring.

T5's projections, feed-forward blocks and RMS norms act on each token alone, so they run on
the N real tokens of a batch gathered into one (N, e) matrix: no FLOP goes to padding, and
the GEMMs see the whole batch at once instead of one micro-batch at a time. Only attention
needs rows. It runs per group of up to ``ATTENTION_GROUP`` (2) rows of similar length (rows
sorted by length, each group padded to its own longest row), with T5's relative position bias
and a key-padding mask, so attention wastes little on padding either.

The HF modules themselves are called (their norms, feed-forward blocks, projections and
position-bias buckets), so every checkpoint built from transformers' T5 layers works (v1.0
ReLU with a tied head, v1.1 gated-GELU). A model built from other classes (mT5's own, any
non-T5), float16 (HF clamps infinities there), or a module in training mode
is refused by :func:`supports` and the scorer runs transformers' own forward instead. The
scorer uses these forwards by default on a CPU only: on a GPU, where a padded token costs
little next to the extra kernel launches of per-group attention, they have not been measured
yet (``Scorer(packed=True)`` forces them anywhere). :func:`label_loss` is the training loss on
the same forwards (a step on 16 RTE inputs: 1.59x faster in bf16, 1.65x in float32).

Measured against transformers' padded forward on 2 AMD EPYC cores (bf16, t5-small-lm-adapt,
batches of 32 RTE inputs, n=10 prompts): encoder alone 44.7 rows/s (8-row length-sorted
micro-batches) -> 54.6 (one packed forward); the server, 64 clients and 8 tasks, 3 interleaved
A/B pairs: 33.2/30.4/29.0 vs 26.4/25.9/22.8 requests/s. Same values as the padded forward up
to rounding (float32: max |diff| ~4e-6, tested). Fusing q/k/v into one GEMM gained ~3%, inside
this machine's noise, so the HF projections are called as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# rows per attention call. Each shard's forward runs on one thread (spp.prompts.parallel), where
# padding inside a group costs more than the extra calls save: measured, bf16 compiled, 2 shards
# of 1 thread, RTE rows, 6 interleaved repeats, groups of 2 vs 8: batches of 8 rows 31.2 vs 27.4
# rows/s, 32 rows 40.2 vs 35.7, 64 rows 41.4 vs 39.2 (1 row per group: the same as 2); one
# forward on 2 threads 34.3 vs 33.0; float32 19.3 vs 18.5; a bf16 training step 13.6 vs 13.1.
ATTENTION_GROUP = 2


@dataclass
class Layout:
    """Where the real tokens of a (B, T) right-padded batch go once padding is dropped."""

    index: torch.Tensor  # (N,) flat (B*T) positions of the real tokens, row-major
    groups: list[tuple[list[int], int, int]]  # (rows, longest length, first slot) per attention group
    slots: torch.Tensor  # (P,) packed token at each slot of the grouped layout; N = the zero row
    unslot: torch.Tensor  # (N,) slot of each packed token in the grouped layout
    key_mask: list[torch.Tensor]  # per group (g, 1, 1, Tg) bool: True on a real key
    longest: int

    @property
    def tokens(self) -> int:
        return int(self.index.shape[0])


def plan(mask: torch.Tensor, group: int = ATTENTION_GROUP) -> Layout:
    """The packed layout of a right-padded (B, T) attention mask (1 = real token)."""
    lens = mask.sum(dim=1).tolist()  # (B,)
    B = mask.shape[0]
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    N = starts[-1]
    by_len = sorted(range(B), key=lambda r: lens[r])
    groups, slots, unslot, key_mask = [], [], [0] * N, []
    for a in range(0, B, group):
        rows = by_len[a : a + group]
        width, first = max(lens[r] for r in rows), len(slots)
        for i, r in enumerate(rows):
            base = first + i * width
            slots += list(range(starts[r], starts[r] + lens[r])) + [N] * (width - lens[r])
            unslot[starts[r] : starts[r] + lens[r]] = range(base, base + lens[r])
        keys = torch.arange(width).unsqueeze(0) < torch.tensor([lens[r] for r in rows]).unsqueeze(1)  # (g, Tg)
        key_mask.append(keys[:, None, None, :].to(mask.device))
        groups.append((rows, width, first))
    dev = mask.device
    return Layout(
        index=mask.reshape(-1).nonzero().squeeze(1),
        groups=groups,
        slots=torch.tensor(slots, dtype=torch.long, device=dev),
        unslot=torch.tensor(unslot, dtype=torch.long, device=dev),
        key_mask=key_mask,
        longest=max(lens) if lens else 0,
    )


def supports(model: nn.Module) -> bool:
    """Whether ``model`` is a T5-family encoder-decoder these forwards reproduce exactly."""
    try:
        blocks = list(model.get_encoder().block) + list(model.get_decoder().block)
        names = {type(layer).__name__ for b in blocks for layer in b.layer}
        dtype = model.get_input_embeddings().weight.dtype
    except (AttributeError, TypeError):
        return False
    known = {"T5LayerSelfAttention", "T5LayerCrossAttention", "T5LayerFF"}
    # MT5/UMT5 etc. have their own classes; only the exact T5 layers are reproduced here
    return bool(blocks) and names <= known and dtype != torch.float16 and not model.training


def _split_heads(x: torch.Tensor, rows: int, width: int, heads: int) -> torch.Tensor:
    return x.view(rows, width, heads, -1).transpose(1, 2)  # (g, H, width, dh)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    g, H, w, dh = x.shape
    return x.transpose(1, 2).reshape(g * w, H * dh)  # (g * w, H * dh)


def _attend_grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: list[torch.Tensor],
                    layout: Layout, heads: int) -> torch.Tensor:
    """Self-attention of packed (N, inner) q/k/v within each row; returns (N, inner)."""
    qs, ks, vs = (_with_zero_row(t).index_select(0, layout.slots) for t in (q, k, v))  # (P, inner)
    out = []
    for (rows, width, first), mask in zip(layout.groups, masks):
        part = slice(first, first + len(rows) * width)
        split = [_split_heads(t[part], len(rows), width, heads) for t in (qs, ks, vs)]  # (g, H, Tg, dh)
        out.append(_merge_heads(F.scaled_dot_product_attention(*split, attn_mask=mask, scale=1.0)))
    return torch.cat(out).index_select(0, layout.unslot)  # (N, inner)


def _with_zero_row(x: torch.Tensor) -> torch.Tensor:
    """(N, c) -> (N + 1, c): row N is the zero that padding slots of a layout point at."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """A boolean attention mask (True: may attend) as the additive float mask attention takes
    (0 or the dtype's minimum), plus a position bias if given; same shape as ``allowed``
    (broadcast with ``bias``)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask if bias is None else mask + bias.to(dtype)


def attention_inputs(sa: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A self-attention sublayer's RMS norm and q/k/v projections of packed (N, e) states."""
    h = sa.layer_norm(x)  # (N, e)
    att = sa.SelfAttention
    return att.q(h), att.k(h), att.v(h)  # (N, inner) each


def output_and_feed_forward(att: nn.Module, ff: nn.Module, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The attention output projection and residual, then the feed-forward sublayer (norm, FFN,
    residual) of packed (N, e) states and (N, inner) attention outputs."""
    return ff(x + att.o(o))  # (N, e)


@dataclass(frozen=True)
class Sublayers:
    """The per-token work of an encoder layer, everything but attention: the part torch.compile
    fuses well (RMS norms, GELU, residual adds) on shapes that vary only in N, so one dynamic
    graph per function serves every layer and batch (spp.prompts.compiled.compiled_sublayers)."""

    attention_inputs: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = attention_inputs
    feed_forward: Callable[..., torch.Tensor] = output_and_feed_forward


EAGER = Sublayers()


def encode(encoder: nn.Module, inputs: torch.Tensor, layout: Layout, sublayers: Sublayers = EAGER) -> torch.Tensor:
    """The encoder stack on right-padded (B, T, e) embeddings; returns packed (N, e) states."""
    B, T, e = inputs.shape
    x = inputs.reshape(B * T, e).index_select(0, layout.index)  # (N, e)
    first = encoder.block[0].layer[0].SelfAttention
    bias = first.compute_bias(layout.longest, layout.longest, device=x.device)  # (1, H, Tmax, Tmax)
    # built once per forward, shared by every layer: (g, H, Tg, Tg) bias plus key padding per group
    masks = [additive_mask(keys, x.dtype, bias[:, :, :w, :w])
             for (_, w, _), keys in zip(layout.groups, layout.key_mask)]
    for block in encoder.block:
        att = block.layer[0].SelfAttention
        q, k, v = sublayers.attention_inputs(block.layer[0], x)  # (N, inner) each
        o = _attend_grouped(q, k, v, masks, layout, att.n_heads)  # (N, inner)
        x = sublayers.feed_forward(att, block.layer[-1], x, o)  # (N, e)
    return encoder.final_layer_norm(x)  # (N, e)


def decode(decoder: nn.Module, input_ids: torch.Tensor, self_mask: torch.Tensor, memory: torch.Tensor,
           layout: Layout) -> torch.Tensor:
    """The decoder stack over (B, D) ids with a prepared additive (B, 1, D, D) self-attention
    mask, attending to packed (N, e) encoder states; returns (B, D, e) hidden states."""
    B, D = input_ids.shape
    x = decoder.embed_tokens(input_ids).reshape(B * D, -1)  # (B*D, e)
    first = decoder.block[0].layer[0].SelfAttention
    self_bias = first.compute_bias(D, D, device=x.device).to(x.dtype) + self_mask  # (B, H, D, D)
    cross_masks = [additive_mask(keys, x.dtype) for keys in layout.key_mask]  # (g, 1, 1, Tg) each
    rows = [torch.tensor(r, device=x.device) for r, _, _ in layout.groups]
    for block in decoder.block:
        sa, ca = block.layer[0], block.layer[1]
        att = sa.SelfAttention
        h = sa.layer_norm(x)  # (B*D, e)
        q, k, v = (_split_heads(p(h), B, D, att.n_heads) for p in (att.q, att.k, att.v))  # (B, H, D, dh)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self_bias, scale=1.0)  # (B, H, D, dh)
        x = x + att.o(_merge_heads(o))
        x = x + ca.EncDecAttention.o(_cross(ca, ca.layer_norm(x), memory, layout, D, rows, cross_masks))
        x = block.layer[-1](x)
    return decoder.final_layer_norm(x).view(B, D, -1)  # (B, D, e)


def _cross(layer: nn.Module, h: torch.Tensor, memory: torch.Tensor, layout: Layout, D: int,
           rows: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """Cross-attention of (B*D, e) decoder states to each row's packed encoder states; (B*D, inner)."""
    att = layer.EncDecAttention
    H = att.n_heads
    k, v = (_with_zero_row(p(memory)).index_select(0, layout.slots) for p in (att.k, att.v))  # (P, inner)
    q = att.q(h).view(-1, D, att.inner_dim)  # (B, D, inner)
    out = torch.empty_like(q)  # (B, D, inner)
    for idx, (_, width, first), mask in zip(rows, layout.groups, masks):
        g = idx.shape[0]
        part = slice(first, first + g * width)
        kk, vv = (_split_heads(t[part], g, width, H) for t in (k, v))  # (g, H, Tg, dh)
        qq = _split_heads(q.index_select(0, idx).reshape(-1, att.inner_dim), g, D, H)  # (g, H, D, dh)
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=1.0)  # (g, H, D, dh)
        out[idx] = o.transpose(1, 2).reshape(g, D, -1)
    return out.view(-1, att.inner_dim)  # (B*D, inner)


def label_loss(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy of ``labels`` (B, D), -100 = ignored, for (B, T, e) encoder
    inputs: what ``T5ForConditionalGeneration(inputs_embeds=..., labels=...).loss`` computes,
    with the unpadded forwards (differentiable: the prompt inside ``inputs`` gets gradients)."""
    config = model.config
    B, D = labels.shape
    layout = plan(mask)
    memory = encode(model.get_encoder(), inputs, layout)  # (N, e)
    dec_ids = torch.full_like(labels, int(config.pad_token_id))  # (B, D) labels shifted right
    dec_ids[:, 0] = int(config.decoder_start_token_id)
    dec_ids[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, int(config.pad_token_id))
    past = torch.ones(1, 1, D, D, dtype=torch.bool, device=labels.device).tril_()  # keys up to the query
    causal = additive_mask(past, memory.dtype)  # (1, 1, D, D)
    hidden = decode(model.get_decoder(), dec_ids, causal, memory, layout)  # (B, D, e)
    if config.scale_decoder_outputs:  # v1.0's tied head rescales first, as transformers does
        hidden = hidden * (model.model_dim**-0.5)
    logits = model.lm_head(hidden)  # (B, D, V)
    return F.cross_entropy(logits.float().reshape(B * D, -1), labels.reshape(-1), ignore_index=-100)
