"""Prometheus text exposition written by hand: families, cumulative buckets, escaping."""

from __future__ import annotations

import re

from spp.serve.metrics import UNKNOWN_TASK, Metrics


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_exposition_has_every_family_with_help_and_type():
    text = Metrics().render(queue_depth=3, cache_size=2)
    assert text.endswith("\n")
    for name, kind in [("spp_requests_total", "counter"), ("spp_request_latency_seconds", "histogram"),
                       ("spp_batch_size", "histogram"), ("spp_batch_prompts", "histogram"),
                       ("spp_queue_depth", "gauge"), ("spp_prompt_cache_hits_total", "counter"),
                       ("spp_prompt_cache_misses_total", "counter"), ("spp_prompt_cache_evictions_total", "counter"),
                       ("spp_prompt_cache_size", "gauge")]:
        assert f"# TYPE {name} {kind}\n" in text and f"# HELP {name} " in text
    s = _samples(text)
    assert s["spp_queue_depth"] == 3 and s["spp_prompt_cache_size"] == 2


def test_counters_and_cumulative_histograms():
    m = Metrics()
    m.observe_request("rte", 200, 0.003)
    m.observe_request("rte", 200, 0.2)
    m.observe_request(None, 404, 0.001)
    m.observe_batch(5, 2)
    m.observe_batch(64, 1)
    for e in ("hit", "hit", "miss", "eviction"):
        m.cache_event(e)
    s = _samples(m.render(queue_depth=0, cache_size=1))
    assert s['spp_requests_total{task="rte",status="200"}'] == 2
    assert s[f'spp_requests_total{{task="{UNKNOWN_TASK}",status="404"}}'] == 1
    assert s['spp_request_latency_seconds_bucket{task="rte",le="0.005"}'] == 1
    assert s['spp_request_latency_seconds_bucket{task="rte",le="0.25"}'] == 2
    assert s['spp_request_latency_seconds_bucket{task="rte",le="+Inf"}'] == 2
    assert abs(s['spp_request_latency_seconds_sum{task="rte"}'] - 0.203) < 1e-9
    assert s['spp_batch_size_bucket{le="4.0"}'] == 0 and s['spp_batch_size_bucket{le="8.0"}'] == 1
    assert s['spp_batch_size_bucket{le="64.0"}'] == 2 and s["spp_batch_size_sum"] == 69
    assert s["spp_batch_prompts_sum"] == 3
    assert s["spp_prompt_cache_hits_total"] == 2 and s["spp_prompt_cache_misses_total"] == 1
    assert s["spp_prompt_cache_evictions_total"] == 1


def test_label_values_are_escaped():
    m = Metrics()
    m.observe_request('we"ird\\na\nme', 404, 0.0)
    line = next(x for x in m.render(queue_depth=0, cache_size=0).splitlines() if x.startswith("spp_requests_total{"))
    assert line == 'spp_requests_total{task="we\\"ird\\\\na\\nme",status="404"} 1'
    assert re.fullmatch(r'[a-z_]+\{.*\} \d+', line)
