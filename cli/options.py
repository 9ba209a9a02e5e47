"""The option types that several commands share, declared once.

Each is an ``Annotated`` alias that a command uses as a parameter's type (``registry: RegistryOpt
= None``), so that a flag has the same name, short name and help text everywhere. Options that
only one command has stay in that command's module. Nothing here imports torch or transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_BACKBONE = "google/t5-base-lm-adapt"  # the paper's; `spp train`, `spp methods` and `spp serve`

# --- output and registry ----------------------------------------------------------------------
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
RegistryOpt = Annotated[
    Optional[str],
    typer.Option(
        "--registry", envvar="SPP_REGISTRY", show_default=False,
        help="Registry: a directory, or postgresql://USER@HOST:PORT/DB?store=STORE_URL for one shared by many "
        "hosts (password from PGPASSWORD or ~/.pgpass) \\[default: $SPP_REGISTRY, else $SPP_HOME, else a per-user dir].",
    ),
]

# --- registry references and labels -------------------------------------------------------------
Ref = Annotated[str, typer.Argument(help="Reference: NAME (latest), NAME@VERSION or NAME@ALIAS.", show_default=False)]
Tags = Annotated[list[str], typer.Option("--tag", "-t", help="Tag KEY=VALUE (repeatable).")]
Aliases = Annotated[list[str], typer.Option("--alias", "-a", help="Point this alias at the version (repeatable).")]
HubToken = Annotated[
    Optional[str],
    typer.Option("--token", envvar="HF_TOKEN", help="Hub token \\[default: $HF_TOKEN, else the saved login].", show_default=False),
]

# --- the backbone and where it runs -------------------------------------------------------------
Backbone = Annotated[
    str,
    typer.Option(
        "--backbone", "-b",
        help="T5 checkpoint: Hub id, local directory, or random:<name> (random:t5-small, "
        "random:google/t5-base-lm-adapt, ...: real architecture, random weights, no download).",
    ),
]
PromptBackbone = Annotated[
    Optional[str],
    typer.Option("--backbone", "-b", help="Backbone \\[default: the one the prompts were trained on].", show_default=False),
]
Tokenizer = Annotated[
    Optional[str],
    typer.Option(help="Tokenizer Hub id or directory (default: the backbone's; needed offline for random:<name>)."),
]
Revision = Annotated[
    Optional[str],
    typer.Option(help="Hub revision of the backbone: branch, tag or commit \\[default: main].", show_default=False),
]
Device = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option(help="auto (bfloat16 on CUDA, and on a CPU with native bf16 matmul where it "
                                          "measures faster, or as $SPP_CPU_DTYPE pins it; else float32), float32 or bfloat16.")]

# --- data and evaluation ------------------------------------------------------------------------
DataDir = Annotated[
    Optional[Path],
    typer.Option(help="Local data: GLUE TSV (train/dev/test.tsv) or SuperGLUE JSONL (train/val.jsonl). Default: the Hub."),
]
Split = Annotated[str, typer.Option(help="Split to evaluate on: train, validation or test (must have labels).")]
MaxEvalSamples = Annotated[Optional[int], typer.Option(help="Evaluate on at most N examples per split.")]
Mode = Annotated[
    str, typer.Option(help="Evaluation: rank (rank classification) or generate (free decoding, paper parity; "
                      "reports invalid_rate).")
]
MaxSourceLength = Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")]
Shards = Annotated[Optional[int], typer.Option(
    help="Score each batch as this many shards at once, each on its own thread with an equal share of the CPU "
         "threads (default: 2 on a CPU, 1 on a GPU): keeps a CPU's cores busy. Same scores.")]
Method = Annotated[str, typer.Option("--method", "-m", help="Prompt method (see `spp methods`).")]
