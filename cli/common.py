"""Shared CLI plumbing: the rich consoles, JSON output, and the one-line error path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry directory (default: $SPP_HOME, else a per-user data dir).", show_default=False),
]


def print_json(data: Any) -> None:
    """JSON to stdout, nothing else on it (so `--json | jq` works)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: what every bad input gets."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def quiet_libraries() -> None:
    """Keep third-party progress bars and advice off the user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
