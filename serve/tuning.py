"""How many rows per forward pass: chosen by measurement, because the best answer moves.

A padded row costs a CPU as much compute as a full one, so a batch of requests of mixed
lengths wastes work (RTE-length inputs: ~2.4x more tokens than needed in a batch of 64), and
scoring it as length-sorted micro-batches avoids that. But each forward also has a fixed cost
(Python, thread synchronisation) that grows when the CPU is shared: measured on the same 2
cores, 8-row micro-batches of a 64-row batch ran 1.6x faster than one forward on an idle
machine and 2.7x slower under load. So the worker tries each micro-batch size, keeps an
exponential average of seconds per row for each, uses the fastest, and re-tries the others
now and then (epsilon-greedy), following the machine as its load changes.
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
        per_row = seconds / rows
        old = self._cost.get(size)
        self._cost[size] = per_row if old is None else (1 - self.alpha) * old + self.alpha * per_row

    @property
    def costs(self) -> dict[int | None, float]:
        """Current seconds-per-row estimate of every measured size."""
        return dict(self._cost)
