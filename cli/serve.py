"""spp CLI: `spp serve`, the HTTP server (Litestar app under uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spp.cli import common
from spp.cli.options import (
    DEFAULT_BACKBONE, Backbone, Device, Dtype, MaxSourceLength, RegistryOpt, Revision, Shards, Tokenizer,
)

_LIMITS = "Limits"
_SECURITY = "Security"


def serve_cmd(
    backbone: Backbone = DEFAULT_BACKBONE,
    revision: Revision = None,
    registry: RegistryOpt = None,
    tokenizer: Tokenizer = None,
    preload: Annotated[
        str, typer.Option(help="Comma-separated prompt references to load at startup, e.g. rte@prod,cb.")
    ] = "",
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="Rows (of any task) per forward pass.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="A batch closes after this many ms without a new request.")] = 5.0,
    max_queue: Annotated[int, typer.Option(help="Queued rows above which requests get 503.")] = 1024,
    micro_batches: Annotated[
        bool | None,
        typer.Option("--micro-batches/--no-micro-batches",
                     help="Split batches into length-sorted micro-batches when measured faster "
                     "(default: on a CPU running transformers' padded forwards: a backbone the unpadded ones "
                     "do not cover)."),
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile",
                     help="torch.compile the forwards, at startup (eager if compiling fails). Default: on where "
                     "they run unpadded (a T5 on a CPU: seconds to compile, 10-15% faster scoring), off for "
                     "transformers' padded forwards (a GPU, other models), which take 30-50 s to compile on a CPU "
                     "and ~100 s on an H200, where a batch scored 1.7-2x faster but the server's requests/s did "
                     "not move (its host work decides them there)."),
    ] = None,
    shards: Shards = None,
    shard_processes: Annotated[
        bool | None,
        typer.Option("--shard-processes/--shard-threads",
                     help="Run each batch's shards in worker processes (an interpreter each, the weights shared) "
                     "or threads of the server. Default: processes on a CPU with 2+ shards (2% more requests/s "
                     "measured on 2 cores; a crashed worker is replaced), threads elsewhere."),
    ] = None,
    pipeline: Annotated[
        bool | None,
        typer.Option("--pipeline/--no-pipeline",
                     help="With shard processes: each worker scores whole batches, as many batches in flight as "
                     "workers, instead of each batch split over all of them. Default: on with shard processes "
                     "(+4.5% requests/s over 10 server pairs on 2 cores, faster in 8)."),
    ] = None,
    max_inputs: Annotated[
        int, typer.Option(help="Inputs per request above which it gets 413.", rich_help_panel=_LIMITS)
    ] = 64,
    max_input_chars: Annotated[
        int, typer.Option(help="Characters per formatted input above which it gets 413.", rich_help_panel=_LIMITS)
    ] = 4096,
    max_source_length: MaxSourceLength = 512,
    cache_size: Annotated[int, typer.Option(help="Prompts kept on the device (LRU).")] = 64,
    device: Device = "auto",
    dtype: Dtype = "auto",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    body_timeout_s: Annotated[
        float, typer.Option(help="Seconds a request body may take to arrive (then 408).", rich_help_panel=_LIMITS)
    ] = 10.0,
    api_key_file: Annotated[
        Optional[Path],
        typer.Option(help="Require 'Authorization: Bearer KEY' on /predict, /tasks and /metrics; one key per "
                     "line (# comments). $SPP_API_KEYS (comma-separated) adds keys.", rich_help_panel=_SECURITY),
    ] = None,
    metrics_auth: Annotated[
        bool, typer.Option("--metrics-auth/--public-metrics",
                           help="With keys: /metrics needs one too, or stays open for a scraper.",
                           rich_help_panel=_SECURITY),
    ] = True,
    ssl_certfile: Annotated[
        Optional[Path], typer.Option(help="Serve HTTPS with this PEM certificate (chain).", rich_help_panel=_SECURITY)
    ] = None,
    ssl_keyfile: Annotated[
        Optional[Path], typer.Option(help="The certificate's PEM private key.", rich_help_panel=_SECURITY)
    ] = None,
    allowed_host: Annotated[
        Optional[list[str]],
        typer.Option(help="Accept only this Host header (repeatable; *.example.org for subdomains); "
                     "/health and /ready answer any.", rich_help_panel=_SECURITY),
    ] = None,
) -> None:
    """Serve every prompt of a registry from ONE frozen T5 over HTTP: POST /predict?task=rte@prod.

    --backbone must be the T5 the prompts were trained on (each prompt's fingerprint is checked).
    The server never writes to the registry; see README "Security" for keys, TLS and proxies.
    """
    import os

    from spp.serve.settings import ServeSettings

    settings = ServeSettings(
        backbone=backbone,
        revision=revision,
        registry=registry,
        tokenizer=tokenizer,
        preload=preload,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        micro_batches=micro_batches,
        compile=compile,
        shards=shards,
        shard_processes=shard_processes,
        pipeline=pipeline,
        max_inputs=max_inputs,
        max_input_chars=max_input_chars,
        max_source_length=max_source_length,
        cache_size=cache_size,
        device=device,
        dtype=dtype,
        log_level=log_level,
        body_timeout_s=body_timeout_s,
        api_keys=os.environ.get("SPP_API_KEYS", ""),  # never a flag: argv is visible to every user
        api_key_file=api_key_file,
        metrics_auth=metrics_auth,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        allowed_hosts=tuple(allowed_host or ()),
    )
    run_server(settings)


def run_server(settings) -> None:
    """Run the app under uvicorn until interrupted (Ctrl-C: clean shutdown)."""
    import asyncio
    import logging

    from spp.serve import app as serve_app

    common.quiet_libraries()
    level = {"trace": "DEBUG"}.get(settings.log_level, settings.log_level.upper())
    logging.getLogger("spp").setLevel(level)  # startup, prompt loads and warnings, like uvicorn's own
    scheme = "https" if settings.ssl_certfile is not None else "http"
    auth = f"; {len(settings.api_keys)} API key(s) required" if settings.api_keys else ""
    common.err_console.print(
        f"loading {settings.backbone}; then serving on {scheme}://{settings.host}:{settings.port} "
        f"(POST /predict?task=NAME, GET /tasks, OpenAPI at /schema){auth}", highlight=False
    )
    asyncio.run(serve_app.run_server(settings))

