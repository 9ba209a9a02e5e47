"""Rich progress displays driven by library callbacks (the library itself only logs)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from spp.cli.common import err_console
from spp.prompts.tasks import main_score
from spp.prompts.train.trainer import TrainEvent


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


class TrainProgress:
    """A bar per training run with the running loss and the last validation score."""

    def __init__(self, enabled: bool = True, description: str = "train") -> None:
        self.enabled = enabled
        self.description = description
        self._progress = _progress() if enabled else None
        self._task = None
        self._loss: float | None = None
        self._metric = ""

    def __enter__(self) -> "TrainProgress":
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def stage(self, text: str) -> None:
        """A one-line note between runs (the demo's steps)."""
        self.description = text
        if self._progress:
            self._progress.console.print(f"[cyan]>[/] {text}")

    def update(self, event: TrainEvent) -> None:
        if not self._progress:
            return
        if event.kind == "start":
            self._task = self._progress.add_task(self.description, total=event.total_steps, info="")
            return
        if event.loss is not None:
            # exponential moving average: the raw minibatch loss is too noisy to read
            self._loss = event.loss if self._loss is None else 0.9 * self._loss + 0.1 * event.loss
        if event.kind == "eval" and event.metrics:
            self._metric = f" val {main_score(event.metrics):.4f}"
        if event.kind == "end":
            self._loss = None
        info = (f"loss {self._loss:.4f}" if self._loss is not None else "") + self._metric
        if self._task is not None:
            self._progress.update(self._task, completed=event.step, info=info)


class CountBar:
    """A bar advanced by calling it with a count (examples scored); :meth:`total` sets its length
    once the caller knows it. Without a ``progress`` (the display disabled) both do nothing."""

    def __init__(self, progress: Progress | None = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def total(self, n: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=n)


@contextmanager
def count_progress(description: str, enabled: bool = True, total: int | None = None) -> Iterator[CountBar]:
    """A :class:`CountBar` on the terminal for the block (a silent one when not ``enabled``)."""
    if not enabled:
        yield CountBar()
        return
    with _progress() as progress:
        yield CountBar(progress, progress.add_task(description, total=total, info=""))


class SweepProgress:
    """A live table of a sweep's trials (pending / running / done / failed) and the counts."""

    STYLES = {"pending": "dim", "running": "yellow", "done": "green", "failed": "red"}

    def __init__(self, enabled: bool = True, title: str = "sweep") -> None:
        self.enabled, self.title = enabled, title
        self.status: dict[str, tuple[str, str]] = {}
        self._live = None

    def __enter__(self) -> "SweepProgress":
        if self.enabled:
            from rich.live import Live

            self._live = Live(self._render(), console=err_console, refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.update(self._render())
            self._live.stop()

    def update(self, event) -> None:  # a spp.sweep.runner.SweepEvent
        self.status[event.trial] = (event.kind, event.info)
        if self._live:
            self._live.update(self._render())

    def _render(self):
        from rich.table import Table

        counts = {k: sum(1 for s, _ in self.status.values() if s == k) for k in self.STYLES}
        caption = "  ".join(f"[{self.STYLES[k]}]{k} {n}[/]" for k, n in counts.items())
        table = Table(title=self.title, caption=caption, show_lines=False)
        table.add_column("trial")
        table.add_column("status")
        table.add_column("version / error", overflow="fold")
        for trial, (kind, info) in self.status.items():
            table.add_row(trial, f"[{self.STYLES[kind]}]{kind}[/]", info)
        return table
