"""torch.compile for the frozen backbone's forwards, with a guarded fallback.

Inductor fuses the elementwise work between the GEMMs (T5's RMS norms, the gated GELU, the
residual adds) that eager mode runs as separate passes over memory. ``dynamic=True`` compiles
one graph for every batch size and sequence length, so a server seeing inputs of any length
does not recompile per shape (no bucketing needed). Two things are compiled, depending on the
forwards the scorer runs:

- the unpadded forwards (spp.prompts.packed, a T5 on a CPU): only the per-token sublayers of the
  encoder (:func:`compiled_sublayers`), two small graphs whose only varying dimension is the
  number of tokens, shared by every layer; attention stays eager (per-group shapes). Compiling
  takes ~3 s (~12 s on a cold Inductor cache) and scoring got 10-15% faster on 2 AMD EPYC cores
  (t5-small-lm-adapt, 32 RTE rows, 8 interleaved repeats: bf16 39.8 -> 44.2 rows/s, float32
  20.3 -> 23.4), so the server does it by default. They are built with Inductor's C++ wrapper
  (``cpp_wrapper``), which releases the GIL for the whole call: the default Python wrapper runs
  Inductor's fused kernels (the GELU, the RMS norms) with the GIL held, so while one shard thread
  (spp.prompts.parallel) ran its GELU the other could not launch its next op. py-spy on the server
  under load: shard threads held the GIL 15% of the time (half of it in those kernels), 7% with
  the C++ wrapper; see :data:`SUBLAYER_OPTIONS` for the throughput;
- transformers' padded forwards (a GPU, or a model packing does not cover): the whole encoder and
  decoder (~50 s cold, ~30 s with the cache warm), opt-in (``--compile``). On an H200 (bf16,
  t5-small-lm-adapt, 8 prompts mixed, bench/stages.py) compiling took 97 s and a batch then
  scored in 25 ms instead of 42 (64 rows) and 11 instead of 21 (8 rows); but a compiled server
  answered 255 requests/s against the eager one's 251 (bench/serve_ab.py, 2 rounds each, 64
  clients), ready in 124 s instead of 18: the server's own host work per request decides its
  rate there, so compiling stays opt-in on a GPU too.

Anything that goes wrong (no C++ compiler, an unsupported op in a future transformers, a failed
recompile) is logged once and the function runs eagerly from then on: a failure never reaches
a request.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from spp.prompts.packed import Sublayers

log = logging.getLogger(__name__)

# Inductor options for the unpadded sublayers. The C++ wrapper releases the GIL during each call
# (see the module docstring). Measured on 2 AMD EPYC vCPUs, bf16, 64 HTTP clients, 8 tasks, two
# servers side by side measured in turn: 6 pairs 38.5 -> 40.5 requests/s (5 of 6 pairs faster),
# 4 more 39.5 -> 40.7; bare 32-row batches in 2 shards 44.3 -> 45.4 rows/s; float32 neutral (10
# pairs 23.3 vs 24.4, 6 more 24.6 vs 23.5). Compile time unchanged (cold 18.7 s vs 18.8 s).
SUBLAYER_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}


class GuardedCompile:
    """Calls ``fn`` through ``torch.compile(fn, dynamic=True)`` (with Inductor ``options`` if
    given); eager for good after a failure."""

    def __init__(self, fn: Callable[..., Any], name: str, options: dict[str, Any] | None = None) -> None:
        self.eager = fn
        self.name = name
        self.options = dict(options or {})
        self.failure: str | None = None  # why compiling was given up (None: still compiled)
        self._lock = threading.Lock()
        try:
            extra = {"options": self.options} if self.options else {}
            self._compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=True, **extra)
        except Exception as exc:  # torch.compile itself refused (e.g. an unsupported Python)
            self._compiled = None
            self._give_up(exc)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        compiled = self._compiled
        if compiled is not None:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:
                self._give_up(exc)
        return self.eager(*args, **kwargs)

    def _give_up(self, exc: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                log.warning("torch.compile of the %s failed, running it eagerly: %s", self.name, self.failure)
            self._compiled = None


def compiled_sublayers() -> "Sublayers":
    """The unpadded encoder's per-token sublayers through torch.compile (see the module docstring)."""
    from spp.prompts import packed

    return packed.Sublayers(
        attention_inputs=GuardedCompile(packed.attention_inputs, "unpadded encoder's attention inputs",
                                        SUBLAYER_OPTIONS),
        feed_forward=GuardedCompile(packed.output_and_feed_forward, "unpadded encoder's feed-forward",
                                    SUBLAYER_OPTIONS),
    )
