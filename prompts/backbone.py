"""The frozen T5 backbone: loading (Hub id, local dir, ``random:<name>``), freezing, fingerprint,
and the one function that prepends per-row soft prompts to the encoder input.

Prompts go to the encoder only: they are prepended to ``inputs_embeds`` and the attention mask
is extended. Every path that runs the model (training, scoring, serving, transfer) builds its
encoder input with :func:`prepend_prompts`, so they agree exactly.
"""

from __future__ import annotations

from spp.prompts.errors import SppError
from spp.prompts.hardware import DTYPES, DtypeChoice, choose_dtype, gpu_attention

import copy
import hashlib
import json
import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Hashable, Iterator, Literal, Sequence, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"


class BackboneError(SppError):
    """The backbone or its tokenizer cannot be loaded, or does not match a prompt."""


def known_random_names() -> list[str]:
    """Architectures that ``random:<name>`` can build offline from a shipped config."""
    files = resources.files("spp.prompts").joinpath("configs").iterdir()
    return sorted(f.name[: -len(".json")].replace("--", "/") for f in files if f.name.endswith(".json"))


def random_config(name: str):
    """The shipped T5Config of a known architecture (real hyperparameters, no weights)."""
    from transformers import T5Config

    if name not in known_random_names():
        raise BackboneError(
            f"unknown random architecture {name!r}; known: {', '.join(known_random_names())}"
        )
    text = resources.files("spp.prompts").joinpath("configs", name.replace("/", "--") + ".json").read_text()
    values = json.loads(text)
    # transformers 5 ties lm_head to the embeddings unless told otherwise; T5 v1.1 (lm-adapt)
    # checkpoints are untied, so the flag must be passed explicitly to match their shapes.
    return T5Config(**values)


def build_random_model(name: str, seed: int = 0):
    """A randomly initialised T5 with the exact architecture of checkpoint ``name``."""
    from transformers import T5ForConditionalGeneration

    config = random_config(name)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    if not config.scale_decoder_outputs:  # v1.1: the real checkpoint has its own lm_head
        untie_lm_head(model)
    return model


def untie_lm_head(model: nn.Module) -> None:
    """Give lm_head its own weight, as in real T5 v1.1 checkpoints.

    transformers 5 ties lm_head to the shared embeddings for every T5 built in code; a
    from_pretrained of a v1.1 checkpoint keeps them apart because both tensors are stored.
    """
    head = model.lm_head
    if head.weight is not model.shared.weight:
        return
    std = model.config.initializer_factor * 1.0  # HF's init for an untied T5 lm_head
    head.weight = nn.Parameter(torch.empty_like(model.shared.weight).normal_(0.0, std))
    model.config.tie_word_embeddings = False


def embedding_fingerprint(model: nn.Module) -> str:
    """sha256 over the input embedding matrix (float32, C order): identifies the backbone."""
    weight = model.get_input_embeddings().weight.detach().to("cpu", torch.float32).contiguous()
    return "sha256:" + hashlib.sha256(weight.numpy().tobytes()).hexdigest()


def freeze(model: nn.Module, dropout: Literal["off", "keep"] = "off") -> None:
    """No gradients for any backbone weight; with dropout "off" every Dropout becomes identity.

    Removing dropout from the frozen backbone is SuperPos-Prompt's second contribution: with it
    off, two train-mode forwards of the same batch are identical.
    """
    if dropout not in ("off", "keep"):
        raise BackboneError(f"dropout must be 'off' or 'keep', got {dropout!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    if dropout == "off":
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        if hasattr(model.config, "dropout_rate"):
            model.config.dropout_rate = 0.0
        for module in model.modules():  # attention modules read self.dropout as a float
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = 0.0


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BackboneError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError("device cuda requested but no CUDA GPU is available")
    return dev


def resolve_dtype(dtype: str, device: torch.device, config=None) -> DtypeChoice:
    """The dtype to run in: as asked, or for ``auto`` the hardware's choice for a model of
    ``config``'s width (see spp.prompts.hardware)."""
    if dtype == "auto":
        width = {"d_model": int(config.d_model), "d_ff": int(config.d_ff)} if config is not None else {}
        return choose_dtype(device, **width)
    if dtype not in DTYPES:
        raise BackboneError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DtypeChoice(DTYPES[dtype], f"--dtype {dtype}")


class TokenizerPool:
    """Copies of a tokenizer, each lent to one caller at a time, for threads that must not share
    it: a Rust tokenizer shared by threads can fail a call that overlaps another one changing its
    truncation or padding ("Already borrowed", transformers issue 47085). A copy of T5's tokenizer
    takes ~0.15 s, so copies are returned and lent again, to any thread: the shard threads of
    the next ShardedScore reuse those of the last. At most one copy per concurrent borrower."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.copies = 0  # made so far
        self._free: list[object] = []
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[object]:
        with self._lock:
            tok = self._free.pop() if self._free else None
            self.copies += tok is None
        if tok is None:
            tok = copy.deepcopy(self.tokenizer)
        try:
            yield tok
        finally:
            with self._lock:
                self._free.append(tok)


@dataclass
class Backbone:
    """A frozen T5 with its tokenizer and identity; ``tokenizers`` lends copies of the tokenizer
    to threads (the original stays with one thread: see spp.prompts.scoring.Scorer)."""

    model: nn.Module
    tokenizer: object
    name: str
    fingerprint: str
    revision: str | None = None
    dtype_reason: str = ""  # why the model runs in its dtype (logged; the server's /health)
    tokenizers: TokenizerPool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.tokenizers = TokenizerPool(self.tokenizer)

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def embedding(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight  # (V, e)

    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def label_token_ids(self, words: Sequence[str]) -> list[list[int]]:
        """Token ids (with the closing EOS) of each label word, as the decoder must emit them."""
        ids = [list(self.tokenizer(w, add_special_tokens=True).input_ids) for w in words]
        for w, seq in zip(words, ids):
            if len(seq) < 1:
                raise BackboneError(f"label word {w!r} tokenizes to nothing")
        return ids

    def check_prompt(self, fingerprint: str, d_model: int, what: str = "prompt") -> None:
        """Refuse a prompt trained on another backbone (clear message, no silent garbage)."""
        if d_model != self.d_model:
            raise BackboneError(f"{what} has d_model {d_model}, backbone {self.name} has {self.d_model}")
        if fingerprint != self.fingerprint:
            raise BackboneError(
                f"{what} was trained on a different backbone (fingerprint {fingerprint[:19]}..., "
                f"this backbone {self.name} is {self.fingerprint[:19]}...)"
            )


def load_backbone(
    name: str,
    *,
    tokenizer: str | None = None,
    dropout: Literal["off", "keep"] = "off",
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    seed: int = 0,
) -> Backbone:
    """Load ``name`` (Hub id, local directory, or ``random:<known name>``), frozen.

    The fingerprint is taken on float32 weights before any dtype cast, so a bf16 GPU run and a
    float32 CPU run of the same checkpoint agree.
    """
    dev = resolve_device(device)
    if name.startswith(RANDOM_PREFIX):
        arch = name[len(RANDOM_PREFIX):]
        model = build_random_model(arch, seed=seed)
        tok = _load_tokenizer(tokenizer or arch, backbone=name, is_random=tokenizer is None)
    else:
        model = _load_pretrained(name, revision)
        # --revision names a commit of the backbone's repo; another tokenizer repo has its own history.
        own = tokenizer is None or tokenizer == name
        tok = _load_tokenizer(tokenizer or name, backbone=name, is_random=False, revision=revision if own else None)
        revision = resolved_commit(name, revision)
    vocab = len(tok)
    if vocab > model.config.vocab_size:
        raise BackboneError(
            f"tokenizer has {vocab} tokens but backbone {name} has only {model.config.vocab_size} embeddings"
        )
    fp = embedding_fingerprint(model)
    freeze(model, dropout)
    choice = resolve_dtype(dtype, dev, model.config)
    log.info("backbone %s runs in %s on %s (%s)", name, choice.name, dev, choice.reason)
    if (attention := gpu_attention(dev)) is not None:
        log.info("%s", attention)
    model.to(device=dev, dtype=choice.dtype)
    model.train(dropout == "keep")
    return Backbone(model=model, tokenizer=tok, name=name, fingerprint=fp, revision=revision,
                    dtype_reason=choice.reason)


def resolved_commit(name: str, revision: str | None) -> str | None:
    """The commit a Hub backbone was loaded from (a branch or tag moves; a commit does not).

    Read from the Hub cache the load just used (``snapshots/<commit>/config.json``), so it works
    offline too. A local directory, or a cache that cannot say, keeps ``revision`` as given.
    """
    if Path(name).exists():
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except (ValueError, OSError):  # not a valid repo id, unreadable cache
        return revision
    commit = Path(cached).parent.name if isinstance(cached, str) else ""
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else revision


def _load_pretrained(name: str, revision: str | None):
    from transformers import T5ForConditionalGeneration

    try:
        return T5ForConditionalGeneration.from_pretrained(name, revision=revision, dtype=torch.float32)
    except OSError as exc:
        where = "local directory" if Path(name).exists() else "Hub id"
        raise BackboneError(
            f"cannot load T5 backbone {name!r} ({where}): {_first_line(exc)}. Offline, pass a local model "
            f"directory or random:<name> with one of {', '.join(known_random_names())}"
        ) from None


def _load_tokenizer(source: str, *, backbone: str, is_random: bool, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as exc:
        if is_random:
            raise BackboneError(
                f"{backbone} is a random build and has no tokenizer of its own offline; tried the real "
                f"checkpoint's tokenizer {source!r} and failed ({_first_line(exc)}). Pass --tokenizer ID|DIR"
            ) from None
        raise BackboneError(f"cannot load tokenizer {source!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def prepend_prompts(
    embeds: torch.Tensor, attention_mask: torch.Tensor, prompts: torch.Tensor | Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i becomes ``[prompt_i | tokens_i | pad]``.

    embeds: (B, L, e) right-padded token embeddings; attention_mask: (B, L).
    prompts: one (n, e) prompt for every row, or a sequence of B prompts (n_i, e) of any n_i.
    Padding always goes at the end of the row, never between prompt and tokens, so T5's
    relative position buckets are those of the unpadded sequence: a row scores the same in
    a mixed batch as alone.
    Returns (B, T, e) embeddings and (B, T) mask with T = max_i(n_i + len_i).
    """
    B, L, e = embeds.shape
    if isinstance(prompts, torch.Tensor) and prompts.ndim == 2:
        p = prompts.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, n, e)
        ones = attention_mask.new_ones(B, prompts.shape[0])
        return torch.cat([p, embeds], dim=1), torch.cat([ones, attention_mask], dim=1)
    if len(prompts) != B:
        raise ValueError(f"got {len(prompts)} prompts for a batch of {B} rows")
    padded, lens_n = _rows_of_prompts(prompts, embeds)  # (B, n_max, e), (B,)
    lens_x = attention_mask.sum(dim=1)  # (B,)
    n_max = padded.shape[1]
    source = torch.cat([padded, embeds, embeds.new_zeros(B, 1, e)], dim=1)  # (B, n_max+L+1, e)
    T = int((lens_n + lens_x).max())
    t = torch.arange(T, device=embeds.device).unsqueeze(0)  # (1, T)
    in_prompt = t < lens_n.unsqueeze(1)  # (B, T)
    in_tokens = ~in_prompt & (t < (lens_n + lens_x).unsqueeze(1))  # (B, T)
    zero_slot = n_max + L
    index = torch.where(in_prompt, t, torch.where(in_tokens, n_max + t - lens_n.unsqueeze(1), zero_slot))
    out = torch.gather(source, 1, index.unsqueeze(-1).expand(B, T, e))  # (B, T, e)
    mask = (in_prompt | in_tokens).to(attention_mask.dtype)  # (B, T)
    return out, mask


def _rows_of_prompts(prompts: Sequence[torch.Tensor], embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's prompt, zero-padded to the longest, on ``embeds``' device and dtype, and its length.

    Each distinct prompt (by identity) is copied once, then rows index them: a mixed batch of 64
    rows carries a handful of prompts, and on a GPU, where t5-small is host-bound, a cast and a
    copy per row were 128 kernel launches per batch (and one host-to-device copy per row when
    the prompts were on the CPU). The row index and lengths travel as one small tensor."""
    distinct, rows = distinct_rows(prompts)
    sizes = [p.shape[0] for p in distinct]
    table = embeds.new_zeros(len(distinct), max(sizes), embeds.shape[-1])  # (U, n_max, e)
    for k, p in enumerate(distinct):
        table[k, : sizes[k]] = p  # copy_ casts and moves in one step
    index = torch.tensor([rows, [sizes[k] for k in rows]], device=embeds.device)  # (2, B)
    return table[index[0]], index[1]  # (B, n_max, e), (B,)


T = TypeVar("T")


def distinct_rows(items: Sequence[T], key: Callable[[T], Hashable] = id) -> tuple[list[T], list[int]]:
    """The distinct items, first seen first, and for each item the index of its distinct one.
    ``key`` says what is the same: identity by default (tensors have no value equality; a batch
    passes the same prompt object for each row of one task)."""
    slot: dict[Hashable, int] = {}
    distinct: list[T] = []
    rows: list[int] = []
    for item in items:
        k = slot.setdefault(key(item), len(distinct))
        if k == len(distinct):
            distinct.append(item)
        rows.append(k)
    return distinct, rows
