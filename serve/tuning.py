"""How many rows per forward pass: chosen by measurement, because the best answer moves.

A padded row costs a CPU as much compute as a full one, so a batch of requests of mixed
lengths wastes work (RTE-length inputs: ~2.4x more tokens than needed in a batch of 64), and
scoring it as length-sorted micro-batches avoids that. But each forward also has a fixed cost
(Python, thread synchronisation) that grows when the CPU is shared: measured on the same 2
cores, 8-row micro-batches of a 64-row batch ran 1.6x faster than one forward on an idle
machine and 2.7x slower under load. So the worker tries each micro-batch size, keeps an
exponential average of seconds per row for each, uses the fastest, and re-tries the others
now and then (epsilon-greedy), following the machine as its load changes.

Two rules keep one bad sample from deciding for a long time (seen in the server's debug log:
8-row micro-batches measured once at 0.056 s/row, then never chosen again although they ran
at 0.03 s/row): an arm's first run is a warm-up and is not counted (the first forward of new
shapes pays one-off kernel and allocator costs), and a sample taken after an arm went unused
for ``explore_every`` decisions replaces its estimate instead of being averaged into it
(the machine's load may have changed since).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class MicroBatchTuner:
    """Epsilon-greedy choice of rows per forward among ``sizes`` (None: the whole batch).

    Batches of fewer than ``min_rows`` rows always run as one forward (and are not measured):
    there is little padding to save and their per-row cost is not comparable.
    """

    sizes: Sequence[int | None] = (None, 32, 16, 8)
    min_rows: int = 16
    explore_every: int = 16
    alpha: float = 0.3
    _cost: dict[int | None, float] = field(default_factory=dict)  # EMA seconds per row
    _last_used: dict[int | None, int] = field(default_factory=dict)
    _warmed: set[int | None] = field(default_factory=set)  # arms whose warm-up run is done
    _measured_at: dict[int | None, int] = field(default_factory=dict)  # decision of the last sample
    _decisions: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or any(s is not None and s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be positive row counts or None, got {self.sizes!r}")
        if self.min_rows < 1 or self.explore_every < 2 or not 0 < self.alpha <= 1:
            raise ValueError("min_rows >= 1, explore_every >= 2 and 0 < alpha <= 1 are required")

    def choose(self, rows: int) -> int | None:
        """Rows per forward for a batch of ``rows`` (None: one forward for all of them)."""
        arms = [s for s in self.sizes if s is None or s < rows]
        if rows < self.min_rows or len(arms) < 2:
            return None
        self._decisions += 1
        untried = [a for a in arms if a not in self._cost]
        if untried:
            choice = untried[0]
        elif self._decisions % self.explore_every == 0:  # re-measure the stalest arm
            choice = min(arms, key=lambda a: self._last_used.get(a, 0))
        else:
            choice = min(arms, key=lambda a: self._cost[a])
        self._last_used[choice] = self._decisions
        return choice

    def record(self, size: int | None, rows: int, seconds: float) -> None:
        """Feed back how long a batch of ``rows`` took with ``size`` rows per forward."""
        if rows < self.min_rows or rows <= 0:
            return
        if size not in self._warmed:  # the warm-up run of this arm: not representative
            self._warmed.add(size)
            return
        per_row = seconds / rows
        old = self._cost.get(size)
        stale = self._decisions - self._measured_at.get(size, self._decisions) >= self.explore_every
        self._cost[size] = per_row if old is None or stale else (1 - self.alpha) * old + self.alpha * per_row
        self._measured_at[size] = self._decisions

    @property
    def costs(self) -> dict[int | None, float]:
        """Current seconds-per-row estimate of every measured size."""
        return dict(self._cost)
