"""The prompt cache: an LRU of device tensors keyed by (name, version), fed by the registry.

Every request resolves its reference (``rte``, ``rte@3``, ``rte@prod``) through the registry
index (one indexed query, in SQLite or in a shared PostgreSQL index), so an alias
moved by any process on any host is followed by the very next request: the propagation bound
is the commit itself, with no TTL. While a shared index is unreachable, ``name@N`` requests
for prompts in this cache keep being answered (versions are immutable); everything else fails
as unavailable (503). Blobs of a shared registry come through its local sha256-keyed blob
cache, which survives restarts (:class:`~spp.registry.Registry`). Versions are immutable, so the resolved (name, version) is a safe
cache key; the blob's sha256 is compared too, in case a version was deleted and its number
reused. A miss loads the blob through ``Registry.load`` (which re-hashes it) and checks the
prompt's backbone fingerprint and d_model before it is ever used.

All registry calls run on one dedicated thread (``executor``, shared with the app's other
registry reads): SQLite connections stay on the thread that made them, and file reads never
block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from spp.prompts.artifact import ArtifactError
from spp.prompts.backbone import Backbone, BackboneError
from spp.prompts.scoring import LabelSet
from spp.prompts.tasks import TaskError, TaskSpec
from spp.registry import NotFoundError, Registry, RegistryError, UnavailableError, Version, parse_ref
from spp.serve.errors import PromptUnavailableError

log = logging.getLogger(__name__)

CacheEvent = Literal["hit", "miss", "eviction"]


@dataclass(frozen=True)
class LoadedPrompt:
    """A prompt ready to score: the tensor on the device, its task spec and label set."""

    version: Version  # as resolved for serving: name, number, blob; aliases and tags left empty
    prompt: torch.Tensor  # (n, e), backbone device and dtype
    spec: TaskSpec
    labels: LabelSet

    @property
    def ref(self) -> str:
        return self.version.ref


class PromptCache:
    """LRU of :class:`LoadedPrompt` by (name, version); ``capacity`` prompts at most."""

    def __init__(
        self,
        registry: Registry,
        backbone: Backbone,
        *,
        capacity: int = 64,
        on_event: Callable[[CacheEvent], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.registry = registry
        self.backbone = backbone
        self.capacity = capacity
        self._on_event = on_event
        self._entries: OrderedDict[tuple[str, int], LoadedPrompt] = OrderedDict()
        self._lock = threading.Lock()
        self._owns_io = executor is None
        self._io = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="spp-registry")

    # ------------------------------------------------------------------------------- async API
    async def get(self, ref: str) -> LoadedPrompt:
        """Resolve ``ref`` now and return its prompt (loading it on a miss).

        Raises the registry's NotFoundError/RegistryError for unknown or malformed references,
        PromptUnavailableError when the prompt exists but cannot be served.
        """
        return await self.call(self.get_sync, ref)

    async def call(self, fn: Callable, *args, **kwargs):
        """Run ``fn`` on the registry thread (every registry access goes through here)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        if self._owns_io:
            self._io.shutdown(wait=True)
        with self._lock:
            self._entries.clear()

    # -------------------------------------------------------------------------------- sync API
    def get_sync(self, ref: str) -> LoadedPrompt:
        try:
            version = self.registry.resolve(ref, details=False)  # identity only: aliases/tags unused here
        except UnavailableError:
            entry = self._exact_cached(ref)
            if entry is None:  # an alias or `latest` cannot be answered without the index: 503
                raise
            self._emit("hit")
            return entry
        key = (version.name, version.version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.version.sha256 == version.sha256:
                self._entries.move_to_end(key)
                self._emit("hit")
                return entry
        self._emit("miss")
        entry = self._load(version)
        evicted = 0
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                evicted += 1
        for _ in range(evicted):
            self._emit("eviction")
        return entry

    def _exact_cached(self, ref: str) -> LoadedPrompt | None:
        """The cached prompt of ``name@N`` (versions are immutable and their numbers never
        reused, so it stays correct while the index is unreachable); None for other refs."""
        parsed = parse_ref(ref)
        if parsed.version is None:
            return None
        with self._lock:
            entry = self._entries.get((parsed.name, parsed.version))
            if entry is not None:
                self._entries.move_to_end((parsed.name, parsed.version))
            return entry

    def _load(self, version: Version) -> LoadedPrompt:
        ref = version.ref
        try:
            version, artifact = self.registry.load(version)
            meta = artifact.meta
            self.backbone.check_prompt(meta.fingerprint, meta.d_model, what=f"prompt {ref}")
            if not meta.task_spec:
                raise TaskError("the artifact carries no task spec (template and label words)")
            spec = TaskSpec.from_dict(meta.task_spec)
            labels = LabelSet.build(self.backbone, spec.label_words)
        except NotFoundError:
            raise  # removed between resolve and load: an unknown prompt, not a broken one
        except (RegistryError, ArtifactError, BackboneError, TaskError, OSError) as exc:
            log.warning("prompt %s cannot be served: %s", ref, exc)
            raise PromptUnavailableError(ref, str(exc)) from None
        prompt = artifact.prompt.to(self.backbone.device, self.backbone.dtype)  # (n, e)
        log.info("loaded prompt %s (n=%d) into the cache", ref, prompt.shape[0])
        return LoadedPrompt(version=version, prompt=prompt, spec=spec, labels=labels)

    def keys(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _emit(self, event: CacheEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)
