"""Shared CLI plumbing: the rich consoles, JSON output, and the one-line error path.

The option types that several commands share live in :mod:`spp.cli.options`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

# Piped or redirected, rich would squeeze tables into 80 columns and cut values ("sentim…"), so
# `spp list | grep sentiment` would miss; there it gets room for whole values (--json for scripts).
console = Console(width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True)


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
