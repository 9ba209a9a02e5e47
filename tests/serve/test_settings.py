"""ServeSettings validation: every bad value names its field."""

from __future__ import annotations

import pytest

from spp.prompts.methods import ConfigError
from spp.serve.settings import ServeSettings


def test_defaults_and_preload_parsing():
    s = ServeSettings(backbone="random:t5-small", preload=" rte@prod, cb ,,")
    assert s.preload == ("rte@prod", "cb")
    assert (s.host, s.port, s.max_batch_size, s.max_wait_ms, s.max_queue) == ("127.0.0.1", 8000, 64, 5.0, 1024)
    assert ServeSettings(backbone="x", preload=["a", "b@2"]).preload == ("a", "b@2")


@pytest.mark.parametrize("field, value", [
    ("backbone", ""),
    ("max_batch_size", 0),
    ("max_batch_size", 2.5),
    ("max_queue", -1),
    ("max_inputs", True),
    ("max_input_chars", 0),
    ("cache_size", 0),
    ("max_wait_ms", -1),
    ("max_wait_ms", "5"),
    ("port", 70000),
    ("retry_after_s", 0),
    ("micro_batches", "yes"),
    ("compile", "yes"),
    ("shards", 0),
    ("shards", 1.5),
    ("shard_processes", "yes"),
    ("shard_processes", 1),
    ("pipeline", "yes"),
    ("log_level", "loud"),
    ("preload", [3]),
    ("host", ""),
])
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ServeSettings(**{"backbone": "random:t5-small", field: value})


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="max_queue .* must be at least max_batch_size"):
        ServeSettings(backbone="x", max_batch_size=64, max_queue=32)
    with pytest.raises(ConfigError, match="max_inputs .* must not exceed max_queue"):
        ServeSettings(backbone="x", max_batch_size=8, max_queue=16, max_inputs=32)
    with pytest.raises(ConfigError, match="pipeline needs the shards in worker processes"):
        ServeSettings(backbone="x", pipeline=True, shard_processes=False)
    assert ServeSettings(backbone="x", pipeline=False, shard_processes=False).pipeline is False
