"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

No client library: a few counters and histograms behind one lock, rendered on GET /metrics.

    spp_requests_total{task,status}            counter   answered /predict requests
    spp_request_latency_seconds{task}          histogram /predict latency, answered requests
    spp_batch_size                             histogram rows per scored batch
    spp_batch_prompts                          histogram distinct prompts per batch (task mixing)
    spp_queue_depth                            gauge     rows waiting for a batch
    spp_prompt_cache_{hits,misses,evictions}_total  counters
    spp_prompt_cache_size                      gauge     prompts held on the device
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4"  # Litestar appends "; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PROMPT_BUCKETS = (1, 2, 3, 4, 8, 16, 32)
UNKNOWN_TASK = "_unknown"  # requests whose task never resolved: keeps label cardinality bounded

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts: dict[Labels, list[int]] = defaultdict(lambda: [0] * len(self.buckets))
        self.sums: dict[Labels, float] = defaultdict(float)
        self.totals: dict[Labels, int] = defaultdict(int)

    def observe(self, value: float, labels: Labels = ()) -> None:
        counts = self.counts[labels]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        self.sums[labels] += value
        self.totals[labels] += 1

    def render(self, name: str) -> list[str]:
        lines = []
        for labels in sorted(self.totals):
            for bound, count in zip(self.buckets, self.counts[labels]):
                lines.append(f"{name}_bucket{_fmt_labels(labels + (('le', _num(bound)),))} {count}")
            total = self.totals[labels]
            lines.append(f"{name}_bucket{_fmt_labels(labels + (('le', '+Inf'),))} {total}")
            lines.append(f"{name}_sum{_fmt_labels(labels)} {_num(self.sums[labels])}")
            lines.append(f"{name}_count{_fmt_labels(labels)} {total}")
        return lines


class Metrics:
    """Thread-safe collectors; the app, the batcher hook and the cache hook feed them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[Labels, int] = defaultdict(int)
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch_size = _Histogram(BATCH_BUCKETS)
        self.batch_prompts = _Histogram(PROMPT_BUCKETS)
        self.cache: dict[str, int] = {"hit": 0, "miss": 0, "eviction": 0}

    def observe_request(self, task: str | None, status: int, seconds: float) -> None:
        task = task or UNKNOWN_TASK
        with self._lock:
            self.requests[(("task", task), ("status", str(status)))] += 1
            self.latency.observe(seconds, (("task", task),))

    def observe_batch(self, rows: int, prompts: int) -> None:
        with self._lock:
            self.batch_size.observe(rows)
            self.batch_prompts.observe(prompts)

    def cache_event(self, event: str) -> None:
        with self._lock:
            self.cache[event] += 1

    def render(self, *, queue_depth: int, cache_size: int) -> str:
        """The whole exposition, newline-terminated."""
        with self._lock:
            out: list[str] = []
            _family(out, "spp_requests_total", "counter", "Answered /predict requests by task and HTTP status.")
            out += [f"spp_requests_total{_fmt_labels(k)} {v}" for k, v in sorted(self.requests.items())]
            _family(out, "spp_request_latency_seconds", "histogram", "Latency of answered /predict requests.")
            out += self.latency.render("spp_request_latency_seconds")
            _family(out, "spp_batch_size", "histogram", "Rows (inputs of any task) per scored batch.")
            out += self.batch_size.render("spp_batch_size")
            _family(out, "spp_batch_prompts", "histogram", "Distinct prompts (tasks) per scored batch.")
            out += self.batch_prompts.render("spp_batch_prompts")
            _family(out, "spp_queue_depth", "gauge", "Rows waiting in the batch queue.")
            out.append(f"spp_queue_depth {queue_depth}")
            for event, word in (("hit", "hits"), ("miss", "misses"), ("eviction", "evictions")):
                name = f"spp_prompt_cache_{word}_total"
                _family(out, name, "counter", f"Prompt cache {word}.")
                out.append(f"{name} {self.cache[event]}")
            _family(out, "spp_prompt_cache_size", "gauge", "Prompts held on the device.")
            out.append(f"spp_prompt_cache_size {cache_size}")
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(float(value))
