"""The server's runtime, free of any web framework: model, registry, prompt cache, batcher.

:class:`Service` is what the Litestar app's lifespan starts and stops and what its handlers
call. It loads the tokenizer and the frozen T5 once, opens the registry on a dedicated
thread, and answers predictions through the shared :class:`~spp.serve.batcher.Batcher`, whose
batches are scored in shards: on a CPU, by default, in worker processes that map the T5's
weights from shared memory (spp.prompts.processes).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import sqlite3
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

from spp.prompts import processes
from spp.prompts.artifact import read_metadata
from spp.prompts.backbone import Backbone, load_backbone
from spp.prompts.parallel import ShardedScore, plan
from spp.prompts.processes import ProcessShardedScore
from spp.prompts.scoring import Scorer
from spp.prompts.tasks import FormattedTooLongError, TaskInputError, TaskSpec
from spp.registry import NotFoundError, Registry, RegistryError, Version, parse_ref
from spp.serve.batcher import Batcher
from spp.serve.cache import LoadedPrompt, PromptCache
from spp.serve.errors import (
    InvalidRequestError,
    PromptUnavailableError,
    RequestTooLargeError,
    ServeError,
    ServerBusyError,
    UnknownTaskError,
    redact_paths,
)
from spp.serve.metrics import Metrics
from spp.serve.schemas import (
    HealthResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    TaskInfo,
    TasksResponse,
    VersionInfo,
)
from spp.serve.settings import ServeSettings
from spp.serve.tuning import MicroBatchTuner

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RequestContext:
    """What a request learns while it is answered, for the caller's bookkeeping (metrics)."""

    task: str | None = None  # the resolved prompt's name; None until (unless) it resolves


class Service:
    """One frozen backbone, one registry, one prompt cache, one batcher."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.backbone: Backbone | None = None
        self.registry: Registry | None = None
        self.cache: PromptCache | None = None
        self.batcher: Batcher | None = None
        self.scorer: Scorer | None = None
        self._io: ThreadPoolExecutor | None = None
        self._started = False
        self._sharded: ShardedScore | ProcessShardedScore | None = None
        self.shard_processes: bool | None = None  # whether shards run in worker processes, once started
        self.compiled: bool | None = None  # whether the forwards run compiled, once started
        self.pipeline: bool | None = None  # whether workers score whole batches, several in flight
        # sha256 -> (blob file stat when its hash was checked, fields, labels)
        self._headers: OrderedDict[str, tuple[tuple[int, ...], list[str], list[str]]] = OrderedDict()

    # ------------------------------------------------------------------------------- lifecycle
    async def start(self) -> bool:
        """Load backbone and tokenizer once, open the registry, start the batcher, preload.

        Returns False (and does nothing) when already started, so a runner may start the
        service before the app's lifespan runs (startup errors then reach the caller).
        """
        if self._started:
            return False
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return True

    async def _start(self) -> None:
        s = self.settings
        self.backbone = await asyncio.to_thread(
            load_backbone, s.backbone, tokenizer=s.tokenizer, device=s.device, dtype=s.dtype, revision=s.revision
        )
        log.info("backbone %s loaded on %s in %s (%s; %s)", s.backbone, self.backbone.device, self.backbone.dtype,
                 self.backbone.dtype_reason, self.backbone.fingerprint[:19])
        # All registry access happens on this one thread (SQLite connections are per thread).
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spp-registry")
        loop = asyncio.get_running_loop()
        self.registry = await loop.run_in_executor(self._io, lambda: Registry(s.registry, must_exist=True))
        # The cache tokenizes label words on the registry thread while the scoring threads
        # tokenize inputs: a Rust tokenizer must not be shared between threads, so copy it.
        label_backbone = dataclasses.replace(self.backbone, tokenizer=copy.deepcopy(self.backbone.tokenizer))
        self.cache = PromptCache(
            self.registry, label_backbone, capacity=s.cache_size, on_event=self.metrics.cache_event, executor=self._io
        )
        scorer = self.scorer = Scorer(self.backbone, max_source_length=s.max_source_length, compile=s.compile)
        # each batch in shards scored at once, in worker processes or on threads that split the CPU
        # (spp.prompts.processes, spp.prompts.parallel); compiled before /ready, not on a request
        sharded = self._sharded = await asyncio.to_thread(self._shards, scorer)
        log.info("batches scored as %d shard%s at once, %d CPU thread%s each, in %s", sharded.shards,
                 "s" if sharded.shards > 1 else "", sharded.threads, "s" if sharded.threads != 1 else "",
                 "worker processes" if self.shard_processes else "threads of this process")
        # Unpadded (packed) forwards waste nothing on padding, so micro-batches only pay off for
        # padded ones on a CPU (measured in the server: whole packed batches 29.1/27.7 req/s vs
        # tuned micro-batches 28.4/29.3, the same; see spp.serve.tuning for the padded case).
        padded_cpu = self.backbone.device.type == "cpu" and not scorer.packed
        # whole batches per worker, as many in flight as workers (spp.serve.batcher): processes only
        pipeline = isinstance(sharded, ProcessShardedScore) and sharded.shards > 1 and s.pipeline is not False
        self.pipeline = pipeline
        if pipeline:
            log.info("each worker scores whole batches, %d batches in flight (--no-pipeline splits them)", sharded.shards)
        elif s.pipeline:
            log.warning("--pipeline needs 2+ shards in worker processes; each batch is scored split over its shards")
        tune = not pipeline and (s.micro_batches if s.micro_batches is not None else padded_cpu)
        self.batcher = Batcher(
            sharded.whole if pipeline else sharded,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            retry_after_s=s.retry_after_s,
            tuner=MicroBatchTuner() if tune else None,
            on_batch=self.metrics.observe_batch,
            concurrency=sharded.shards if pipeline else 1,
        )
        await self.batcher.start()
        for ref in s.preload:  # a bad preload reference fails startup, loudly
            entry = await self.cache.get(ref)
            log.info("preloaded %s", entry.ref)

    def _shards(self, scorer: Scorer) -> ShardedScore | ProcessShardedScore:
        """The batch's shards as --shards and --shard-processes ask (automatic: see each module)."""
        assert self.backbone is not None
        shards, threads = plan(self.settings.shards, self.backbone.device)
        self.shard_processes = processes.wanted(self.settings.shard_processes, self.backbone.device, shards)
        asked = scorer.compiled  # compile asked for (or chosen automatically), not yet tried
        sharded, self.compiled = processes.start_shards(scorer, shards, threads, in_processes=self.shard_processes)
        if asked:
            log.info("backbone forwards %s", "compiled" if self.compiled else "run eagerly (compile failed)")
        return sharded

    async def stop(self) -> None:
        """Stop the batcher (queued requests get 503), the shard threads and the registry thread."""
        if self.batcher is not None:
            await self.batcher.close()
        if self._sharded is not None:
            await asyncio.to_thread(self._sharded.close)
            self._sharded = None
        if self._io is not None:
            if self.registry is not None:
                await self.registry_call(self.registry.close)  # the registry thread's SQLite connection
            io, self._io = self._io, None
            await asyncio.to_thread(io.shutdown, wait=True)
        self._started = False

    @property
    def loaded(self) -> bool:
        return self.backbone is not None and self.batcher is not None and self.batcher.running

    async def registry_call(self, fn, *args, **kwargs):
        """Run ``fn`` on the registry thread."""
        if self._io is None:
            raise ServerBusyError("the registry is not open (server starting up or shutting down)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    def health(self) -> HealthResponse:
        """Liveness, with the dtype the backbone runs in and why (``auto``: the hardware check)."""
        if self.backbone is None:
            return HealthResponse(status="ok")
        packed = self.scorer.packed if self.scorer is not None else None
        sharded = self._sharded
        return HealthResponse(status="ok", dtype=str(self.backbone.dtype).removeprefix("torch."),
                              dtype_reason=self.backbone.dtype_reason, compiled=self.compiled, packed=packed,
                              shards=sharded.shards if sharded else None, threads=sharded.threads if sharded else None,
                              shard_processes=self.shard_processes, pipeline=self.pipeline)

    async def readiness(self) -> ReadyResponse:
        """Ready when the model is loaded, the batcher runs and the registry answers."""
        if not self.loaded:
            return ReadyResponse(status="not_ready", detail="model or batcher not running")
        try:
            await self.registry_call(self.registry.names)  # type: ignore[union-attr]
        except Exception as exc:  # any failure means "not reachable"; the reason goes in detail
            return ReadyResponse(status="not_ready", detail=redact_paths(f"registry unreachable: {exc}"))
        assert self.backbone is not None and self.cache is not None
        return ReadyResponse(status="ready", backbone=self.backbone.name, device=str(self.backbone.device),
                             prompts_cached=len(self.cache))

    def render_metrics(self) -> str:
        """Prometheus text; queue depth and cache size are read now (0 before startup)."""
        depth = self.batcher.pending if self.batcher is not None else 0
        size = len(self.cache) if self.cache is not None else 0
        return self.metrics.render(queue_depth=depth, cache_size=size)

    # ------------------------------------------------------------------------------ prediction
    async def prompt(self, ref: str) -> LoadedPrompt:
        """The prompt ``ref`` resolves to right now.

        Raises InvalidRequestError (malformed reference), UnknownTaskError (listing the known
        names), PromptUnavailableError (exists, cannot be served) or ServerBusyError (the
        registry itself failed: a transient server-side problem, never the client's).
        """
        assert self.cache is not None and self.registry is not None
        try:
            parse_ref(ref)
        except RegistryError as exc:  # "a@b@c", "x@", a name with a space...
            raise InvalidRequestError(f"bad task reference {ref!r}: {exc}") from None
        try:
            return await self.cache.get(ref)
        except NotFoundError as exc:
            known = await self.registry_call(self.registry.names)
            raise UnknownTaskError(str(exc), known) from None
        except ServeError:  # PromptUnavailableError: this prompt only
            raise
        except (RegistryError, sqlite3.Error, OSError) as exc:
            log.error("registry error while resolving %s: %s", ref, exc)
            raise ServerBusyError(f"the registry is unavailable: {' '.join(str(exc).split())}") from None

    def check_shape(self, body: PredictRequest) -> int:
        """Exactly one of inputs/texts, at least one and at most max_inputs of them."""
        if (body.inputs is None) == (body.texts is None):
            raise InvalidRequestError('the body needs exactly one of "inputs" (template fields) or "texts"')
        n = len(body.inputs if body.inputs is not None else body.texts)  # type: ignore[arg-type]
        if n == 0:
            raise InvalidRequestError("no inputs: send at least one")
        if n > self.settings.max_inputs:
            raise RequestTooLargeError(f"{n} inputs in one request; the limit is {self.settings.max_inputs}")
        return n

    def render(self, spec: TaskSpec, body: PredictRequest) -> list[str]:
        """Texts to score: the template applied to each input (or the given texts), length-checked."""
        if body.texts is not None:
            texts = list(body.texts)
        else:
            texts = []
            for i, fields in enumerate(body.inputs or []):
                try:  # the limit is checked before the text is built, whatever the template
                    texts.append(spec.format(fields, limit=self.settings.max_input_chars))
                except FormattedTooLongError as exc:
                    raise RequestTooLargeError(f"inputs[{i}]: {exc}") from None
                except TaskInputError as exc:
                    raise TaskInputError(f"inputs[{i}]: {exc} (template fields: {', '.join(spec.fields)})") from None
        limit = self.settings.max_input_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                where = "texts" if body.texts is not None else "inputs"
                raise RequestTooLargeError(f"{where}[{i}] is {len(text)} characters; the limit is {limit}")
        return texts

    async def predict(self, ref: str, body: PredictRequest, context: RequestContext | None = None) -> PredictResponse:
        """Validate, resolve, queue, answer. ``context.task`` receives the resolved task name."""
        assert self.batcher is not None
        context = context if context is not None else RequestContext()
        self.check_shape(body)
        try:
            entry = await self.prompt(ref)
        except PromptUnavailableError as exc:
            context.task = exc.ref.split("@")[0]
            raise
        context.task = entry.version.name
        texts = self.render(entry.spec, body)
        result = await self.batcher.submit(texts, entry.prompt, entry.labels)
        words = entry.spec.label_words
        predictions = [
            Prediction(label=words[p], probabilities=dict(zip(words, probs)))
            for p, probs in zip(result.preds, result.probs)
        ]
        return PredictResponse(task=entry.version.name, prompt=entry.ref, version=entry.version.version,
                               predictions=predictions)

    # ----------------------------------------------------------------------------------- tasks
    async def tasks(self) -> TasksResponse:
        assert self.backbone is not None
        try:
            tasks = await self.registry_call(self._tasks_sync)
        except (RegistryError, sqlite3.Error, OSError) as exc:
            raise ServerBusyError(f"the registry is unavailable: {' '.join(str(exc).split())}") from None
        return TasksResponse(backbone=self.backbone.name, fingerprint=self.backbone.fingerprint, tasks=tasks)

    def _tasks_sync(self) -> list[TaskInfo]:
        assert self.registry is not None
        out = []
        for name in self.registry.names():
            versions = sorted(self.registry.list(name=name), key=lambda v: v.version)
            try:
                latest: int | None = self.registry.resolve(name).version
            except RegistryError:  # e.g. every version deprecated
                latest = None
            infos = [self._version_info(v) for v in versions]
            default = next((i for i in infos if i.version == latest), infos[-1] if infos else None)
            out.append(TaskInfo(
                name=name,
                latest=latest,
                aliases={a: v.version for v in versions for a in v.aliases},
                fields=list(default.fields) if default else [],
                label_words=list(default.label_words) if default else [],
                versions=infos,
            ))
        return out

    def _version_info(self, v: Version) -> VersionInfo:
        assert self.backbone is not None and self.registry is not None
        reason = None
        if v.d_model != self.backbone.d_model or v.fingerprint != self.backbone.fingerprint:
            reason = f"trained on another backbone ({v.backbone})"
        fields: list[str] = []
        labels: list[str] = []
        try:
            fields, labels = self._spec_summary(v)
        except Exception as exc:  # unreadable header: report it, keep listing the others
            reason = reason or redact_paths(f"unreadable artifact: {' '.join(str(exc).split())}")
        return VersionInfo(
            version=v.version, ref=v.ref, aliases=list(v.aliases), method=v.method, n_tokens=v.n_tokens,
            metrics=_float_metrics(v.metrics), main_metric=v.main_metric, tags=dict(v.tags),
            created_at=v.created_at, deprecated=v.deprecated, servable=reason is None, reason=reason,
            fields=fields, label_words=labels,
        )

    def _spec_summary(self, v: Version) -> tuple[list[str], list[str]]:
        """Template fields and label words from the artifact header, once its sha256 is checked.

        A blob that fails its hash is not servable, so /tasks must not say it is; the hashes
        (the store's copy, and a shared registry's local copy) are checked again only when the
        local file's stat changes (size, mtime, inode): a listing reads no blob it has checked.
        """
        assert self.registry is not None
        stamp = _stat_stamp(self.registry.blob_path(v, verify=False))
        hit = self._headers.get(v.sha256)
        if hit is None or hit[0] != stamp:
            problem = self.registry.check_blob(v)
            if problem is not None:
                raise ServeError(problem)
            path = self.registry.blob_path(v)  # a shared registry's copy: re-fetched if corrupt
            stamp = _stat_stamp(path)
            meta = read_metadata(path)
            if not meta.task_spec:
                raise ServeError("no task spec in the artifact")
            spec = TaskSpec.from_dict(meta.task_spec)
            hit = self._headers[v.sha256] = (stamp, list(spec.fields), list(spec.label_words))
            while len(self._headers) > 4096:
                self._headers.popitem(last=False)
        return hit[1], hit[2]


def _stat_stamp(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns, info.st_ino


def _float_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {split: {k: float(x) for k, x in values.items()} for split, values in (metrics or {}).items()}
