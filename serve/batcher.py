"""Mixed-task dynamic batching: one queue for every task, one forward per batch.

Requests of any task go into ONE queue. A single worker takes rows until the batch holds
``max_batch_size`` rows, or no row has arrived for ``max_wait_ms``, or the oldest row has
waited ``WAIT_CAP`` times that; then it scores the
whole batch in one call of a score function (``Scorer.score``: per-row prompts of any n,
per-row label sets; one encoder and one decoder pass) on a dedicated
thread, so the event loop keeps accepting requests meanwhile. With a
:class:`~spp.serve.tuning.MicroBatchTuner` (the server's default on a CPU running padded
forwards), a batch may run instead as length-sorted micro-batches, each still mixing tasks,
when that measures faster.
A request larger than the free room of a batch is split across batches and answered when
its last row is scored.

With ``concurrency`` > 1 (worker processes that each score whole batches: spp.prompts.processes)
that many batches are in flight at once, one per scoring thread, and a batch formed while other
slots are free takes only its share of the queued rows: 64 queued rows and 2 free slots make two
batches of 32 at once, not one of 64 while the other worker waits for its clients' next requests.

Failure isolation: if scoring a mixed batch raises, each request of the batch is scored
again on its own; only requests that fail alone get an error. The worker never dies on a row.

This module has no web-framework import: the app (or a test) calls :meth:`Batcher.submit`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from spp.prompts.scoring import LabelSet, ScoreFn
from spp.serve.errors import QueueFullError, ScoringError, ServerBusyError
from spp.serve.tuning import MicroBatchTuner

log = logging.getLogger(__name__)

WAIT_CAP = 10  # the oldest row waits at most WAIT_CAP * max_wait_ms while rows keep arriving
BatchHook = Callable[[int, int], None]  # (rows, distinct prompts) of each scored batch


@dataclass
class BatchResult:
    """Per input: the index of the best label and the probability of every label."""

    preds: list[int]
    probs: list[list[float]]


@dataclass(eq=False)
class _Job:
    texts: list[str]
    prompt: torch.Tensor  # (n, e) on the scoring device
    labels: LabelSet
    future: asyncio.Future
    enqueued: float
    preds: list[int] = field(default_factory=list)
    probs: list[list[float]] = field(default_factory=list)
    remaining: int = 0

    def __post_init__(self) -> None:
        self.preds = [0] * len(self.texts)
        self.probs = [[] for _ in self.texts]
        self.remaining = len(self.texts)


@dataclass(eq=False)
class _Chunk:
    """Rows ``start:stop`` of a job; a batch is a list of chunks."""

    job: _Job
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


class Batcher:
    """One asyncio-facing queue and one worker; scoring runs on ``concurrency`` dedicated threads
    (one batch each; 1 by default)."""

    def __init__(
        self,
        score_fn: ScoreFn,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        retry_after_s: int = 1,
        tuner: MicroBatchTuner | None = None,
        on_batch: BatchHook | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or concurrency < 1:
            raise ValueError("max_batch_size, max_queue and concurrency must be >= 1 and max_wait_ms >= 0")
        if tuner is not None and concurrency > 1:
            raise ValueError("a micro-batch tuner measures one scoring thread: use it with concurrency 1")
        self._score_fn = score_fn
        self.concurrency = concurrency
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.tuner = tuner  # used on the scoring thread only
        self._on_batch = on_batch
        self._queue: deque[_Chunk] = deque()
        self._pending = 0  # rows queued, not yet taken into a batch
        self._last_arrival = 0.0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None  # free scoring threads
        self._in_flight: set[asyncio.Task] = set()
        self._busy = 0  # batches being scored
        self._closed = False

    # ------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the worker on the running loop (idempotent)."""
        if self._task is not None:
            return
        self._closed = False
        self._wakeup = asyncio.Event()
        self._slots, self._busy = asyncio.Semaphore(self.concurrency), 0
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="spp-score")
        self._task = asyncio.create_task(self._worker(), name="spp-batcher")

    async def close(self) -> None:
        """Stop the worker, fail queued requests with ServerBusyError, release the thread."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for task in list(self._in_flight):  # as the worker's own batch was before: cancelled
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        while self._queue:
            job = self._queue.popleft().job
            if not job.future.done():
                job.future.set_exception(ServerBusyError("the server is shutting down"))
        self._pending = 0
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True)  # let an in-flight batch finish

    @property
    def pending(self) -> int:
        """Rows waiting in the queue (the queue-depth metric)."""
        return self._pending

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closed

    # ---------------------------------------------------------------------------------- submit
    async def submit(self, texts: Sequence[str], prompt: torch.Tensor, labels: LabelSet) -> BatchResult:
        """Queue ``texts`` (all scored with ``prompt`` (n, e) and ``labels``); await the result.

        Raises QueueFullError when the queue has no room for all rows (nothing is queued then),
        ServerBusyError when the worker is not running, ScoringError when this request fails.
        """
        if not self.running:
            raise ServerBusyError("the batcher is not running (server starting up or shutting down)")
        texts = list(texts)
        if not texts:
            return BatchResult([], [])
        if self._pending + len(texts) > self.max_queue:
            raise QueueFullError(
                f"the queue is full ({self._pending} of {self.max_queue} rows queued); retry later",
                retry_after_s=self.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        job = _Job(texts, prompt, labels, loop.create_future(), loop.time())
        self._queue.append(_Chunk(job, 0, len(texts)))
        self._pending += len(texts)
        self._last_arrival = job.enqueued
        assert self._wakeup is not None
        self._wakeup.set()
        # A cancelled caller cancels job.future; the worker then skips its rows.
        return await job.future

    # ---------------------------------------------------------------------------------- worker
    async def _worker(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            await self._slots.acquire()  # a free scoring thread first (with 1: the last batch done)
            try:
                await self._fill()
                batch = self._take()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception:  # a bug must not stop serving: log it and keep going
                self._slots.release()
                log.exception("batcher worker error")
                continue
            if not batch:
                self._slots.release()
                continue
            self._busy += 1
            task = asyncio.create_task(self._run_in_slot(batch), name="spp-batch")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run_in_slot(self, batch: list[_Chunk]) -> None:
        assert self._slots is not None
        try:
            await self._run(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop serving: log it and keep going
            log.exception("batcher worker error")
        finally:
            self._busy -= 1
            self._slots.release()

    async def _fill(self) -> None:
        """Wait for a first row, then until the batch is full, arrivals pause, or the cap is hit.

        The pause rule matters under load: when a big batch is answered, its clients send their
        next requests over tens of milliseconds; a fixed window from the first arrival would cut
        them into a small batch and a big one, and a small batch costs nearly as much as a big
        one on a CPU. Waiting while rows keep coming (up to the cap) keeps batches full.
        """
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        cap = self._queue[0].job.enqueued + WAIT_CAP * self.max_wait_s
        while self._pending < self.max_batch_size:
            remaining = min(self._last_arrival + self.max_wait_s, cap) - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Chunk]:
        """Pop up to max_batch_size rows (splitting a large request); skip cancelled requests.
        With other scoring threads free, only this batch's share of the queued rows."""
        batch: list[_Chunk] = []
        room = self.max_batch_size
        free = self.concurrency - self._busy  # this batch's scoring thread and the idle ones
        if free > 1:
            room = min(room, -(-self._pending // free))  # ceil: the queued rows spread over the free slots
        while self._queue and room > 0:
            chunk = self._queue[0]
            if chunk.job.future.done():  # cancelled by its caller
                self._queue.popleft()
                self._pending -= chunk.rows
                continue
            if chunk.rows <= room:
                self._queue.popleft()
                batch.append(chunk)
            else:
                batch.append(_Chunk(chunk.job, chunk.start, chunk.start + room))
                chunk.start += room
            taken = batch[-1].rows
            self._pending -= taken
            room -= taken
        return batch

    async def _run(self, batch: list[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            preds, probs = await loop.run_in_executor(self._executor, self._score, batch)
        except Exception as exc:
            if len({id(c.job) for c in batch}) > 1:
                log.warning("a mixed batch failed (%s); scoring its requests one by one", _one_line(exc))
                await self._run_isolated(batch)
            else:
                self._fail(batch[0].job, exc)
            return
        self._deliver(batch, preds, probs)
        prompts = len({id(c.job.prompt) for c in batch})
        log.debug("scored %d rows of %d prompts in %.3f s; %d rows queued", len(preds), prompts,
                  loop.time() - started, self._pending)
        if self._on_batch is not None:
            self._on_batch(len(preds), prompts)

    async def _run_isolated(self, batch: list[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        jobs: dict[int, list[_Chunk]] = {}
        for chunk in batch:
            jobs.setdefault(id(chunk.job), []).append(chunk)
        for chunks in jobs.values():
            try:
                preds, probs = await loop.run_in_executor(self._executor, self._score, chunks)
            except Exception as exc:
                self._fail(chunks[0].job, exc)
                continue
            self._deliver(chunks, preds, probs)
            if self._on_batch is not None:
                self._on_batch(len(preds), 1)

    def _score(self, batch: list[_Chunk]) -> tuple[list[int], list[list[float]]]:
        """Runs on the scoring thread: one forward for the mixed batch, or tuned micro-batches."""
        texts: list[str] = []
        prompts: list[torch.Tensor] = []
        labels: list[LabelSet] = []
        for chunk in batch:
            rows = chunk.rows
            texts += chunk.job.texts[chunk.start : chunk.stop]
            prompts += [chunk.job.prompt] * rows
            labels += [chunk.job.labels] * rows
        size = self.tuner.choose(len(texts)) if self.tuner is not None else None
        started = time.perf_counter()
        if size is None:
            scores = self._score_fn(texts, prompts, labels)
            preds, probs = scores.preds, scores.probs()  # plain lists: no device sync on the loop
        else:
            preds, probs = self._score_sorted(texts, prompts, labels, size)
        if self.tuner is not None:
            self.tuner.record(size, len(texts), time.perf_counter() - started)
            if log.isEnabledFor(logging.DEBUG):
                costs = {k or "all": round(v, 4) for k, v in self.tuner.costs.items()}
                log.debug("%s rows per forward for %d rows; seconds per row: %s", size or "all", len(texts), costs)
        return preds, probs

    def _score_sorted(
        self, texts: list[str], prompts: list[torch.Tensor], labels: list[LabelSet], size: int
    ) -> tuple[list[int], list[list[float]]]:
        """Rows sorted by length (characters: a close proxy for tokens), ``size`` per forward."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        preds: list[int] = [0] * len(texts)
        probs: list[list[float]] = [[] for _ in texts]
        for a in range(0, len(order), size):
            idx = order[a : a + size]
            scores = self._score_fn([texts[i] for i in idx], [prompts[i] for i in idx], [labels[i] for i in idx])
            for i, p, pr in zip(idx, scores.preds, scores.probs()):
                preds[i], probs[i] = p, pr
        return preds, probs

    def _deliver(self, batch: list[_Chunk], preds: list[int], probs: list[list[float]]) -> None:
        offset = 0
        for chunk in batch:
            job, rows = chunk.job, chunk.rows
            job.preds[chunk.start : chunk.stop] = preds[offset : offset + rows]
            job.probs[chunk.start : chunk.stop] = probs[offset : offset + rows]
            offset += rows
            job.remaining -= rows
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(BatchResult(job.preds, job.probs))

    def _fail(self, job: _Job, exc: Exception) -> None:
        log.warning("scoring a request failed: %s", _one_line(exc))
        transient = isinstance(exc, RuntimeError)  # out of memory, device errors
        if not job.future.done():
            error = ScoringError(f"scoring failed: {_one_line(exc)}", transient=transient)
            job.future.set_exception(error)
        # Drop the job's rows still queued: its answer is already decided.
        for chunk in [c for c in self._queue if c.job is job]:
            self._queue.remove(chunk)
            self._pending -= chunk.rows


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
