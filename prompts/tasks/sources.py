"""Where a task's rows come from: local files (GLUE TSV, SuperGLUE JSONL, CSV/JSONL/TSV) or
the Hugging Face Hub, and how a record's columns map onto the spec's canonical names.

:func:`open_source` yields ``(record, where)`` pairs plus a provenance dict; turning records
into examples (:mod:`spp.prompts.tasks.data`) goes through :func:`column_value`.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

from spp.prompts.artifact.files import sha256_file
from spp.prompts.tasks.spec import SPLITS, TaskError, TaskSpec

logger = logging.getLogger(__name__)

_EXTENSIONS = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
_STEMS = {"train": ("train",), "validation": ("dev", "val", "validation"), "test": ("test",)}
_FORMAT_KIND = {"glue-tsv": "tsv", "tsv": "tsv", "superglue-jsonl": "jsonl", "jsonl": "jsonl", "csv": "csv"}
MISSING = object()

Row = tuple[Mapping[str, Any], str]  # (record, "where" for error messages)


class SplitNotFoundError(TaskError):
    """The requested split does not exist in the source (no file / no such Hub split)."""


# --------------------------------------------------------------------------------- sources
def open_source(spec: TaskSpec, split: str, data_dir: str | Path | None) -> tuple[Iterator[Row], dict[str, Any]]:
    folder = data_dir if data_dir is not None else spec.data_dir
    if folder is None and spec.file_names and spec.hub is None:
        folder = "."  # a custom spec built in code: its file names are relative to the cwd
    if folder is None:
        return _hub_source(spec, split)
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskError(f"data dir {folder} does not exist or is not a folder")
    kind = _detect_kind(spec, folder)
    path = _find_file(spec, folder, split, kind)
    # hub_split: the Hub's name of the split these files hold (a model card names that, never a path)
    # Artifacts travel (registry, Hub): they name local data by its folder's name and the file's
    # sha256, never by an absolute path that leaks the user's filesystem and means nothing elsewhere.
    source = {"id": f"local:{folder.resolve().name}", "config": None, "revision": None, "format": kind,
              "split": path.name, "sha256": sha256_file(path), "hub_split": spec.hub_splits.get(split, split)}
    if kind == "tsv":
        return _tsv_rows(spec, path, split), source
    if kind == "csv":
        return _csv_rows(spec, path, split), source
    return _jsonl_rows(spec, path), source


def _candidates(spec: TaskSpec, split: str, kind: str) -> list[str]:
    names = [f"{stem}.{kind}" for stem in _STEMS[split]]
    explicit = spec.file_names.get(split)
    if explicit is not None and _kind_of(spec, explicit) == kind:
        names.insert(0, explicit)
    return names


def _kind_of(spec: TaskSpec, name: str) -> str:
    kind = _EXTENSIONS.get(Path(name).suffix.lower())
    if kind is None:
        raise TaskError(f"task {spec.name}: file_names entry {name!r} must end in {', '.join(_EXTENSIONS)}")
    return kind


def _detect_kind(spec: TaskSpec, folder: Path) -> str:
    """The first kind (by the spec's preference) for which the folder holds any split's file."""
    preferred = [_kind_of(spec, n) for n in spec.file_names.values()] + [_FORMAT_KIND[spec.file_format]]
    order = list(dict.fromkeys(preferred + ["tsv", "jsonl", "csv"]))
    for kind in order:
        if any((folder / n).is_file() for s in SPLITS for n in _candidates(spec, s, kind)):
            return kind
    looked = sorted({n for k in order for s in SPLITS for n in _candidates(spec, s, k)})
    raise TaskError(f"task {spec.name}: no data files in {folder} (looked for {', '.join(looked)})")


def _find_file(spec: TaskSpec, folder: Path, split: str, kind: str) -> Path:
    names = _candidates(spec, split, kind)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise SplitNotFoundError(f"task {spec.name}: no {split} file in {folder} (looked for {', '.join(names)})")


def _hub_source(spec: TaskSpec, split: str) -> tuple[Iterator[Row], dict[str, Any]]:
    if spec.hub is None:
        raise TaskError(f"task {spec.name} has no Hub dataset; pass --data-dir with its files")
    path, config = spec.hub
    hub_split = spec.hub_splits.get(split, split)
    name = f"{path}/{config}" if config else path
    try:
        import datasets  # imported here: slow to import, and only this path needs it

        ds = datasets.load_dataset(path, config, split=hub_split, revision=spec.hub_revision)
    except Exception as exc:  # offline, unknown dataset/split, auth, ...: all end the same way
        detail = " ".join(str(exc).split())[:200]
        if isinstance(exc, ValueError) and "unknown split" in detail.lower():
            raise SplitNotFoundError(f"task {spec.name}: {name} has no split {hub_split!r}") from None
        raise TaskError(
            f"task {spec.name}: cannot load {name} split {hub_split!r} from the Hugging Face Hub "
            f"({type(exc).__name__}: {detail}); pass --data-dir with local files"
        ) from None
    source = {"id": path, "config": config, "revision": _hub_revision(path, spec.hub_revision),
              "format": "hub", "split": hub_split, "hub_split": hub_split}
    return ((row, f"{name} {hub_split} row {i}") for i, row in enumerate(ds)), source


def _hub_revision(path: str, revision: str | None) -> str | None:
    """The dataset commit actually used, for provenance; None when it cannot be resolved."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(path, revision=revision).sha
    except Exception:  # offline with a cached copy: the pinned name is the best we know
        logger.debug("could not resolve the revision of %s", path, exc_info=True)
        return revision


# --------------------------------------------------------------------------------- readers
def _tsv_rows(spec: TaskSpec, path: Path, split: str) -> Iterator[Row]:
    """Tab-separated, no quoting (GLUE's text holds stray quotes); split on ``\\n`` only."""
    header: list[str] | None = None
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path} line {lineno}"
            line = _decode(raw, where).rstrip("\r\n")
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark (GLUE's MRPC files have one)
            if not line.strip():
                continue
            cells = line.split("\t")
            if header is None:
                if spec.tsv_columns is None or _looks_like_header(spec, cells):
                    header = cells
                    _check_columns(spec, "tsv", header, path, split)
                    continue
                header = list(spec.tsv_columns)  # header-less file (GLUE CoLA train/dev)
            if len(cells) != len(header):
                raise TaskError(f"{where}: malformed row: {len(cells)} tab-separated cells, expected {len(header)}")
            yield dict(zip(header, cells)), where


def _csv_rows(spec: TaskSpec, path: Path, split: str) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return
            _check_columns(spec, "csv", header, path, split)
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                where = f"{path} line {reader.line_num}"
                if len(cells) != len(header):
                    raise TaskError(f"{where}: malformed row: {len(cells)} cells, expected {len(header)}")
                yield dict(zip(header, cells)), where
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TaskError(f"{path} line {reader.line_num}: cannot parse CSV ({exc})") from None


def _jsonl_rows(spec: TaskSpec, path: Path) -> Iterator[Row]:
    if path.suffix.lower() == ".json":  # a JSON array of records
        try:
            records = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TaskError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(records, list):
            raise TaskError(f"{path}: expected a JSON array of objects")
        items: Iterator[tuple[Any, str]] = ((r, f"{path} item {i}") for i, r in enumerate(records))
    else:
        items = _json_lines(path)
    for record, where in items:
        if not isinstance(record, dict):
            raise TaskError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for row in _explode(record, spec.explode, where):
            yield row, where


def _json_lines(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path} line {lineno}"
            if not raw.strip():
                continue
            try:
                yield json.loads(raw), where
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise TaskError(f"{where}: not valid JSON ({exc})") from None


def _explode(record: Mapping[str, Any], paths: tuple[str, ...], where: str) -> Iterator[Mapping[str, Any]]:
    """One record per element of each nested list in ``paths`` (the list replaced by it)."""
    if not paths:
        yield record
        return
    items = _lookup(record, paths[0])
    if items is MISSING:  # already flat (e.g. a pre-flattened file with canonical columns)
        yield from _explode(record, paths[1:], where)
        return
    if not isinstance(items, list):
        raise TaskError(f"{where}: {paths[0]} must be a list, got {type(items).__name__}")
    for item in items:
        yield from _explode(_replace(record, paths[0], item), paths[1:], where)


def _replace(record: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    key, _, rest = path.partition(".")
    out = dict(record)
    out[key] = _replace(record[key], rest, value) if rest else value
    return out


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{where}: not UTF-8 ({exc.reason})") from None


# ------------------------------------------------------------------------- rows -> examples
def _looks_like_header(spec: TaskSpec, cells: list[str]) -> bool:
    names = set(spec.tsv_columns or ()) | {_first(spec.source_column("tsv", f)) for f in spec.fields}
    return any(c in names for c in cells)


def _first(src: str | tuple[str, ...]) -> str:
    return src if isinstance(src, str) else src[0]


def _check_columns(spec: TaskSpec, kind: str, header: list[str], path: Path, split: str) -> None:
    """Fail once per file (not once per row) when a header lacks a needed column."""
    row = dict.fromkeys(header, "")
    needed = list(spec.fields) + ([spec.label_column] if split != "test" else [])
    for name in needed:
        if column_value(spec, kind, row, name) is MISSING:
            src = spec.source_column(kind, name)
            raise TaskError(f"{path}: missing column {src!r} for {name!r} (columns: {', '.join(header)})")


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def _resolve(record: Mapping[str, Any], src: str | tuple[str, ...]) -> Any:
    if isinstance(src, str):
        return _lookup(record, src)
    parts = [_lookup(record, s) for s in src]
    return MISSING if any(p is MISSING for p in parts) else "/".join(str(p) for p in parts)


def column_value(spec: TaskSpec, kind: str, record: Mapping[str, Any], canonical: str) -> Any:
    src = spec.source_column(kind, canonical)
    value = _resolve(record, src)
    if value is MISSING and src != canonical:
        value = _lookup(record, canonical)  # files that already use the canonical names
    return value
