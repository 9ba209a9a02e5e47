"""torch.compile for the frozen backbone's encoder and decoder, with a guarded fallback.

Inductor fuses the elementwise work between the GEMMs (T5's RMS norms, the gated GELU, the
attention bias and mask arithmetic) that eager mode runs as separate passes over memory.
``dynamic=True`` compiles one graph for every batch size and sequence length, so a server
seeing inputs of any length does not recompile per shape (no bucketing needed).

Compiling costs start-up time (measured on 2 AMD EPYC cores, t5-small-lm-adapt: ~50 s cold,
~30 s with Inductor's on-disk cache warm), so it is opt-in (``spp serve --compile``). Anything
that goes wrong (no C++ compiler, an unsupported op in a future transformers, a failed
recompile) is logged once and the forward runs eagerly from then on: a failure never reaches
a request.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


class GuardedCompile:
    """Calls ``fn`` through ``torch.compile(fn, dynamic=True)``; eager for good after a failure."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.eager = fn
        self.name = name
        self.failure: str | None = None  # why compiling was given up (None: still compiled)
        self._lock = threading.Lock()
        try:
            self._compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=True)
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
