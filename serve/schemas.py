"""Request and response bodies (msgspec Structs: validated on decode, documented in OpenAPI)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct

# A template field's value: text, or a number/boolean written as text. null counts as missing.
FieldValue = str | int | float | bool | None


class PredictRequest(Struct, forbid_unknown_fields=True):
    """Exactly one of ``inputs`` (fields of the task template) or ``texts`` (pre-formatted)."""

    inputs: Annotated[
        list[dict[str, FieldValue]] | None,
        Meta(description='One object per input with the fields of the task template, e.g. {"premise": "..."}.'),
    ] = None
    texts: Annotated[
        list[str] | None,
        Meta(description="Pre-formatted input texts (the template is not applied)."),
    ] = None


class Prediction(Struct):
    label: Annotated[str, Meta(description="The most probable label word.")]
    probabilities: Annotated[
        dict[str, float], Meta(description="Probability of every label word (softmax over the label set).")
    ]


class PredictResponse(Struct):
    task: Annotated[str, Meta(description="The prompt's registry name.")]
    prompt: Annotated[str, Meta(description="The exact prompt used, name@version.")]
    version: int
    predictions: list[Prediction]


class VersionInfo(Struct):
    version: int
    ref: str
    aliases: list[str]
    method: str
    n_tokens: int
    metrics: dict[str, dict[str, float]]
    main_metric: float | None
    tags: dict[str, str]
    created_at: str
    deprecated: bool
    servable: Annotated[bool, Meta(description="Trained on this server's backbone and readable.")]
    reason: str | None = None
    fields: list[str] = msgspec.field(default_factory=list)
    label_words: list[str] = msgspec.field(default_factory=list)


class TaskInfo(Struct):
    name: str
    latest: Annotated[int | None, Meta(description="The version `?task=NAME` resolves to.")]
    aliases: dict[str, int]
    fields: list[str]
    label_words: list[str]
    versions: list[VersionInfo]


class TasksResponse(Struct):
    backbone: str
    fingerprint: str
    tasks: list[TaskInfo]


class HealthResponse(Struct, omit_defaults=True):
    status: str
    dtype: str | None = None  # what the backbone runs in (float32, bfloat16), once loaded
    dtype_reason: str | None = None  # why: --dtype as given, or the hardware check behind "auto"
    compiled: bool | None = None  # whether the forwards run through torch.compile (--compile)
    packed: bool | None = None  # whether the forwards skip padding (spp.prompts.packed)
    shards: int | None = None  # shards of a batch scored at once (--shards)
    threads: int | None = None  # torch CPU threads per shard
    shard_processes: bool | None = None  # whether shards run in worker processes (--shard-processes)
    pipeline: bool | None = None  # whether each worker scores whole batches, several in flight (--pipeline)


class ReadyResponse(Struct, omit_defaults=True):
    status: str
    backbone: str | None = None
    device: str | None = None
    prompts_cached: int | None = None
    detail: str | None = None


class FieldError(Struct):
    key: str | None
    message: str


class ErrorBody(Struct, omit_defaults=True):
    """Every error answer: a machine code, the one-line message, and the HTTP status."""

    error: str
    detail: str
    status: int
    known: list[str] | None = None
    errors: list[FieldError] | None = None
