"""Server settings: one validated dataclass shared by ``create_app`` and ``spp serve``."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from spp.prompts.config import check_bool, check_choice, check_int, check_number, check_shards
from spp.prompts.errors import ConfigError

log = logging.getLogger(__name__)


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
        measures faster (see spp.serve.tuning); None: on for a CPU whose forwards are padded
        (a backbone the unpadded forwards of spp.prompts.packed do not cover), off otherwise:
        an unpadded forward wastes nothing on padding to begin with.
    compile: torch.compile the forwards (fused elementwise work; compiled at startup, before
        /ready; eager if compiling fails; see spp.prompts.compiled). None: on where the forwards
        run unpadded (a T5 on a CPU: seconds to compile, 10-15% faster scoring), off for
        transformers' padded forwards, where True costs tens of seconds of startup.
    shards: each batch is scored as this many shards at once, each on its own thread with an
        equal share of torch's CPU threads (spp.prompts.parallel). None: 2 on a CPU with 2 or
        more threads (it keeps the cores busier), 1 elsewhere (a GPU runs one stream).
    shard_processes: run the shards in worker processes (an interpreter each: no shard waits for
        another's GIL) instead of threads of the server's process (spp.prompts.processes). The
        workers share the backbone's weights; each compiles its own forwards at startup. None:
        processes on a CPU when a batch has 2 or more shards, threads otherwise.
    pipeline: with shards in worker processes, each worker scores whole batches and as many
        batches are in flight as there are workers (spp.serve.batcher), instead of every batch
        split over all workers. None: on whenever the shards run in processes.
    max_inputs: inputs per request above which the request gets 413.
    max_input_chars: characters of one formatted input above which the request gets 413.
    cache_size: prompts kept on the device (LRU by name and version).
    retry_after_s: the Retry-After a 503 advertises.
    body_timeout_s: seconds a request body may take to arrive before the answer is 408 (a
        slow or malformed body, e.g. "Transfer-Encoding: chunked" on a plain body, must not
        hold a connection and a client until the client's own timeout).
    api_keys: bearer tokens accepted on /predict and /tasks (and /metrics unless
        metrics_auth is False); empty: no authentication. Never shown in repr or logs.
    api_key_file: a file with one key per line (blank lines and # comments skipped); its keys
        are added to api_keys.
    metrics_auth: whether /metrics needs a key too when keys are set (False: a scraper on a
        private network reads it without one). /health and /ready are always open.
    ssl_certfile, ssl_keyfile: serve HTTPS with this PEM certificate (chain) and private key.
    allowed_hosts: Host header values accepted (e.g. "spp.example.org", "*.example.org");
        empty: any. /health and /ready answer any Host (load balancers probe by address).
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
    compile: bool | None = None
    shards: int | None = None
    shard_processes: bool | None = None
    pipeline: bool | None = None
    max_inputs: int = 64
    max_input_chars: int = 4096
    max_source_length: int = 512
    cache_size: int = 64
    retry_after_s: int = 1
    log_level: str = "info"
    body_timeout_s: float = 10.0
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_key_file: str | Path | None = None
    metrics_auth: bool = True
    ssl_certfile: str | Path | None = None
    ssl_keyfile: str | Path | None = None
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ConfigError(f"backbone must be a non-empty string, got {self.backbone!r}")
        if self.registry is not None and not isinstance(self.registry, (str, Path)):
            raise ConfigError(f"registry must be a path or None, got {self.registry!r}")
        self.preload = _refs(self.preload)
        for name in ("max_batch_size", "max_queue", "max_inputs", "max_input_chars", "max_source_length",
                     "cache_size", "retry_after_s"):
            check_int(name, getattr(self, name), ConfigError)
        for name in ("micro_batches", "compile", "shard_processes", "pipeline"):  # None: automatic
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name), ConfigError)
        check_shards(self.shards, ConfigError)
        if self.pipeline and self.shard_processes is False:
            raise ConfigError("pipeline needs the shards in worker processes: drop --shard-threads or --pipeline")
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
        self._check_security()

    def _check_security(self) -> None:
        """Body timeout, API keys (from the field and the key file), TLS files, allowed hosts."""
        check_number("body_timeout_s", self.body_timeout_s, ConfigError, minimum=0.01, maximum=3600)
        check_bool("metrics_auth", self.metrics_auth, ConfigError)
        keys = list(_items(self.api_keys, "api_keys"))
        if self.api_key_file is not None:
            keys += _read_key_file(Path(self.api_key_file))
        self.api_keys = tuple(_check_key(k, i) for i, k in enumerate(dict.fromkeys(keys)))
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("ssl_certfile and ssl_keyfile go together: give both or neither")
        for name in ("ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"{name}: no such file {str(value)!r}")
        self.allowed_hosts = _items(self.allowed_hosts, "allowed_hosts")
        for host in self.allowed_hosts:
            if "*" in host.removeprefix("*.") and host != "*":
                raise ConfigError(f"allowed_hosts: {host!r} may use '*' only as a leading '*.' (e.g. *.example.org)")


def _refs(value: str | Sequence[str]) -> tuple[str, ...]:
    """Accept "a,b" or ["a", "b"]; strip blanks; each must be a non-empty reference."""
    return _items(value, "preload", what="prompt references")


def _items(value: str | Sequence[str], name: str, what: str = "strings") -> tuple[str, ...]:
    """Accept "a,b" or ["a", "b"]; strip blanks; drop empty items."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{name} must hold {what}, got a {type(item).__name__}")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


_KEY_FILE_MAX = 1 << 16
_KEY_MIN, _KEY_MAX = 16, 512


def _read_key_file(path: Path) -> list[str]:
    """Keys of an api_key_file: one per line; a file with none is an error (auth was asked for)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"api_key_file {str(path)!r} is not a regular file")
        if info.st_size > _KEY_FILE_MAX:
            raise ConfigError(f"api_key_file {str(path)!r} is larger than {_KEY_FILE_MAX} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read api_key_file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ConfigError(f"api_key_file {str(path)!r} holds no key (one per line)")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and os.name == "posix":
        log.warning("api_key_file %s is readable by other users (chmod 600 it)", path)
    return keys


def _check_key(key: str, index: int) -> str:
    """Keys go in an Authorization header: printable ASCII without spaces or commas, long enough
    not to be guessed. The message names the key's position, never the key."""
    if not (_KEY_MIN <= len(key) <= _KEY_MAX) or not key.isascii() or not key.isprintable() or any(
        c in key for c in " ,"
    ):
        raise ConfigError(
            f"API key #{index + 1} is invalid: use {_KEY_MIN}-{_KEY_MAX} printable ASCII characters "
            "without spaces or commas (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return key
