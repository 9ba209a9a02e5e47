"""The artifact's metadata schema, declared once.

:class:`IndexedMeta` holds the fields the registry index keeps as columns (searchable,
shown in listings): the index row, its SQL columns and the publish path are all derived from
its dataclass fields, so a new indexed field is one line here. :class:`ArtifactMeta` adds
everything else an artifact records. Values are JSON-able; in the file they are the strings of
the safetensors ``__metadata__`` header (JSON where structured).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from spp.prompts.config import check_int
from spp.prompts.errors import SppError
from spp.prompts.tasks.spec import TemplateError, main_score, parse_template

FORMAT_VERSION = "1"
REQUIRED = ("format_version", "task", "method", "backbone", "fingerprint", "d_model", "n_tokens")


class ArtifactError(SppError):
    """The file is not a valid spp artifact; the message says why."""


def spp_version() -> str:
    """The installed spp version (recorded in artifacts and reports)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spp")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@dataclass(kw_only=True)
class IndexedMeta:
    """The metadata the registry indexes: one column per field (``dict`` fields as JSON)."""

    task: str
    method: str
    backbone: str
    fingerprint: str
    d_model: int
    n_tokens: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> name -> value
    parent: str | None = None  # artifact/reference this prompt was initialised from


def indexed_fields() -> tuple[dataclasses.Field, ...]:
    """The indexed fields in declaration order (the registry derives its columns from these)."""
    return dataclasses.fields(IndexedMeta)


@dataclass(kw_only=True)
class ArtifactMeta(IndexedMeta):
    """Everything an artifact records besides tensors."""

    method_config: dict[str, Any] = field(default_factory=dict)
    task_spec: dict[str, Any] = field(default_factory=dict)  # template, label words, metrics...
    backbone_revision: str | None = None
    trainable_params: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)  # id, config, revision, split sizes
    steps: int = 0
    wall_time_s: float = 0.0
    created_at: str = ""
    spp_version: str = field(default_factory=spp_version)
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("task", "method", "backbone", "fingerprint"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ArtifactError(f"metadata field {name!r} must be a non-empty string, got {value!r}")
        for name in ("d_model", "n_tokens"):
            check_int(f"metadata field {name!r}", getattr(self, name), ArtifactError)
        self._check_task_spec()

    def _check_task_spec(self) -> None:
        """The template is untrusted input (a published or pulled artifact): every way in
        (decode, read_metadata, PEFT import, publish) builds this object, so this one check
        keeps a ``{x:>300000000}`` or ``{x.__class__}`` template out of registries and servers."""
        if not isinstance(self.task_spec, dict):
            raise ArtifactError(f"metadata field 'task_spec' must be an object, got {type(self.task_spec).__name__}")
        if "template" in self.task_spec:  # a spec without one is refused where it is used (TaskSpec)
            try:
                parse_template(self.task_spec.get("template"))
            except TemplateError as exc:
                raise ArtifactError(f"task spec of {self.task!r}: {exc}") from None

    def indexed(self) -> dict[str, Any]:
        """The values of the indexed fields (what the registry stores in its row)."""
        return {f.name: getattr(self, f.name) for f in indexed_fields()}

    @property
    def main_metric(self) -> float | None:
        """The main score (:func:`~spp.prompts.tasks.main_score` over the task's metric
        names) of the test split, else of the validation split; None when neither was scored."""
        names = self.task_spec.get("metrics") if isinstance(self.task_spec, dict) else None
        for split in ("test", "validation"):
            values = self.metrics.get(split)
            if values:
                score = main_score(values, names)
                if not math.isnan(score):
                    return score
        return None

    def to_header(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if _is_plain_str(f) else json.dumps(value, sort_keys=True)
        return out

    @classmethod
    def from_header(cls, header: dict[str, str]) -> "ArtifactMeta":
        known = {f.name: f for f in dataclasses.fields(cls)}
        missing = [k for k in REQUIRED if k not in header]
        if missing:
            raise ArtifactError(f"missing required metadata: {', '.join(missing)}")
        if header["format_version"] != FORMAT_VERSION:
            raise ArtifactError(f"unsupported artifact format_version {header['format_version']!r}")
        values: dict[str, Any] = {}
        for name, raw in header.items():
            if name not in known:
                continue  # newer writers may add fields; older readers ignore them
            if not isinstance(raw, str):
                raise ArtifactError(f"metadata field {name!r} must be a string in the header")
            if _is_plain_str(known[name]):
                values[name] = raw
            else:
                try:
                    values[name] = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ArtifactError(f"metadata field {name!r} is not valid JSON: {exc}") from None
        return cls(**values)


def _is_plain_str(f: dataclasses.Field) -> bool:
    return f.type in ("str", str)
