"""Server settings: one validated dataclass shared by ``create_app`` and ``spp serve``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from spp.prompts.config import check_bool, check_choice, check_int, check_number
from spp.prompts.errors import ConfigError


@dataclass
class ServeSettings:
    """Everything the server needs; bad values raise ConfigError naming the field.

    backbone: Hub id, local T5 directory or ``random:<name>`` (see spp.prompts.backbone).
    registry: registry location, a directory or postgresql://...?store=... (None: $SPP_REGISTRY,
        else $SPP_HOME, else the per-user data dir); a directory must already exist.
    preload: prompt references loaded into the cache at startup (a bad one fails startup).
    max_batch_size: rows (inputs, from any task) scored in one forward.
    max_wait_ms: a forming batch closes once no row has arrived for this long (or the oldest
        row has waited 10 times this long, or the batch is full).
    max_queue: queued rows above which a request is refused with 503 + Retry-After.
    micro_batches: let the batcher split a batch into length-sorted micro-batches when that
        measures faster (see spp.serve.tuning); None: on for a CPU, off for a GPU.
    max_inputs: inputs per request above which the request gets 413.
    max_input_chars: characters of one formatted input above which the request gets 413.
    cache_size: prompts kept on the device (LRU by name and version).
    retry_after_s: the Retry-After a 503 advertises.
    """

    backbone: str
    registry: str | Path | None = None
    tokenizer: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    preload: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    micro_batches: bool | None = None
    max_inputs: int = 64
    max_input_chars: int = 4096
    max_source_length: int = 512
    cache_size: int = 64
    retry_after_s: int = 1
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ConfigError(f"backbone must be a non-empty string, got {self.backbone!r}")
        if self.registry is not None and not isinstance(self.registry, (str, Path)):
            raise ConfigError(f"registry must be a path or None, got {self.registry!r}")
        self.preload = _refs(self.preload)
        for name in ("max_batch_size", "max_queue", "max_inputs", "max_input_chars", "max_source_length",
                     "cache_size", "retry_after_s"):
            check_int(name, getattr(self, name), ConfigError)
        if self.micro_batches is not None:
            check_bool("micro_batches", self.micro_batches, ConfigError)
        check_int("port", self.port, ConfigError, minimum=0, maximum=65535)
        check_number("max_wait_ms", self.max_wait_ms, ConfigError, minimum=0, maximum=60_000)
        if self.max_queue < self.max_batch_size:
            raise ConfigError(
                f"max_queue ({self.max_queue}) must be at least max_batch_size ({self.max_batch_size})"
            )
        if self.max_inputs > self.max_queue:
            raise ConfigError(f"max_inputs ({self.max_inputs}) must not exceed max_queue ({self.max_queue})")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a non-empty string, got {self.host!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_choice("log_level", self.log_level, ("critical", "error", "warning", "info", "debug", "trace"), ConfigError)


def _refs(value: str | Sequence[str]) -> tuple[str, ...]:
    """Accept "a,b" or ["a", "b"]; strip blanks; each must be a non-empty reference."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"preload must hold prompt references (strings), got {item!r}")
        if item.strip():
            out.append(item.strip())
    return tuple(out)
