"""Share prompts through the Hugging Face Hub: ``spp push REF --repo OWNER/NAME`` and
``spp pull OWNER/NAME[@REV]``.

A pushed repo holds the artifact (``prompt.safetensors``, byte-identical to the registry
blob) and a ``README.md`` model card whose YAML metadata carries ``library_name: spp``,
``base_model`` (the backbone, when it is a Hub id), ``tags`` and ``model-index`` results
built from the artifact's metrics, plus an ``spp`` block (name, version, sha256, ...) that
``pull`` uses to check the download and to name the imported version. Building the folder
and importing one are plain functions over local directories, so they are testable offline;
:func:`push` and :func:`pull` only add the ``HfApi`` upload and ``snapshot_download``.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from spp.registry.core import Registry
from spp.registry.errors import IntegrityError, RegistryError
from spp.registry.index import Version
from spp.prompts.artifact.files import MAX_ARTIFACT_BYTES, MAX_SIDE_FILE_BYTES, read_bounded
from spp.registry.store import sha256_bytes

log = logging.getLogger(__name__)

ARTIFACT_FILE = "prompt.safetensors"
CARD_FILE = "README.md"
LIBRARY_NAME = "spp"
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``owner/name@rev`` -> (``owner/name``, ``rev``); the repo id is validated."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, _, revision = spec.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise RegistryError(f"bad Hub repo {repo_id!r}: {str(exc).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise RegistryError(f"Hub repo must be OWNER/NAME, got {repo_id!r}")
    return repo_id, revision or None


def is_hub_model_id(backbone: str) -> bool:
    """True for ids the Hub accepts as ``base_model`` (not ``random:...``, not a local path)."""
    if backbone.startswith(("random:", "/", ".", "~")) or ".." in backbone or "\\" in backbone:
        return False
    return bool(_HUB_ID_RE.fullmatch(backbone)) and not Path(backbone).exists()


def model_card(version: Version, meta: Any, repo_id: str | None = None) -> str:
    """The README.md text: YAML metadata (library, base model, tags, model-index) and a body."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    dataset_id, config, revision = card_dataset(meta)
    origins = (meta.dataset or {}).get("splits") or {}
    for split, values in sorted(meta.metrics.items()):
        origin = origins.get(split) if isinstance(origins.get(split), dict) else {}
        derived = origin.get("derived")
        for metric, value in sorted(values.items()):
            results.append(EvalResult(
                task_type="text-classification", task_name=meta.task,
                dataset_type=dataset_id or meta.task, dataset_name=f"{meta.task} ({derived})" if derived else meta.task,
                dataset_config=config, dataset_split=str(origin.get("hub_split") or split), dataset_revision=revision,
                metric_type=metric, metric_name=metric, metric_value=float(value),
            ))
    tags = sorted({LIBRARY_NAME, "soft-prompt", "prompt-tuning", "t5", meta.method, meta.task})
    spp_block = {
        "name": version.name, "version": version.version, "file": ARTIFACT_FILE, "sha256": version.sha256,
        "task": meta.task, "method": meta.method, "backbone": meta.backbone, "fingerprint": meta.fingerprint,
        "d_model": meta.d_model, "n_tokens": meta.n_tokens, "tags": dict(version.tags),
    }
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        base_model=meta.backbone if is_hub_model_id(meta.backbone) else None,
        tags=tags,
        model_name=version.name,
        eval_results=results or None,
        spp=spp_block,
    )
    return f"---\n{data.to_yaml()}\n---\n\n{_card_body(version, meta, repo_id or 'OWNER/NAME')}"


def card_dataset(meta: Any) -> tuple[str | None, str | None, str | None]:
    """(Hub dataset id, config, resolved revision) a model card may name; never a local path.

    Data read from the Hub: as recorded (the revision is the commit it resolved to). Local files
    (``--data-dir``): the Hub dataset the task spec names, if any, without a revision, since
    local copies have none; else nothing (the card then names the task).
    """
    dataset = meta.dataset if isinstance(meta.dataset, dict) else {}
    spec_hub = (meta.task_spec or {}).get("hub") if isinstance(meta.task_spec, dict) else None
    recorded = dataset.get("id")  # local files: "local:<folder name>" (older artifacts: a path), never shown
    if dataset.get("format", "hub") == "hub" and isinstance(recorded, str) and is_hub_model_id(recorded):
        return recorded, _opt_str(dataset.get("config")), _opt_str(dataset.get("revision"))
    if isinstance(spec_hub, (list, tuple)) and len(spec_hub) == 2 and isinstance(spec_hub[0], str):
        return spec_hub[0], _opt_str(spec_hub[1]), None
    return None, None, None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _card_body(version: Version, meta: Any, repo_id: str) -> str:
    lines = [
        f"# {version.name} — soft prompt for `{meta.task}`",
        "",
        f"A {meta.n_tokens}-token soft prompt (d_model {meta.d_model}) trained with `{meta.method}` on the "
        f"frozen backbone `{meta.backbone}`, packaged by spp. Only the prompt is "
        "stored; the backbone is unchanged. `spp` checks the backbone fingerprint before use:",
        f"`{meta.fingerprint}`.",
        "",
        "```bash",
        f"spp pull {repo_id}   # imports it into the local registry",
        f"spp serve   # then POST /predict?task={version.name}",
        "```",
    ]
    if meta.metrics:
        lines += ["", "| split | metric | value |", "|---|---|---|"]
        lines += [f"| {s} | {k} | {v:.4f} |" for s, vals in sorted(meta.metrics.items()) for k, v in sorted(vals.items())]
    lines += ["", f"Registry version `{version.ref}`, sha256 `{version.sha256}`.", ""]
    return "\n".join(lines)


def build_hub_folder(registry: Registry, ref: str | Version, out_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write ``prompt.safetensors`` + ``README.md`` for ``ref`` into ``out_dir``."""
    version, artifact = registry.load(ref)  # checks integrity: never push a corrupt blob
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ARTIFACT_FILE).write_bytes(registry.blob_path(version).read_bytes())
    (out / CARD_FILE).write_text(model_card(version, artifact.meta, repo_id), encoding="utf-8")
    return out


def push(
    registry: Registry,
    ref: str,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Create ``repo_id`` if needed and upload the folder; returns the commit URL.

    ``private``: None leaves a new repo's visibility to the Hub (an organisation may make repos
    private by default); True/False ask for it. ``revision``: a branch, created from the default
    branch when missing (a pull request's ``refs/pr/N`` must already exist).
    """
    from huggingface_hub import HfApi

    repo_id, rev = parse_hub_spec(repo_id if revision is None else f"{repo_id}@{revision}")
    api = api if api is not None else HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="spp-push-") as tmp:
        folder = build_hub_folder(registry, ref, tmp, repo_id)
        version = registry.resolve(ref) if not isinstance(ref, Version) else ref
        try:
            api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            if rev is not None and not rev.startswith("refs/pr/"):
                api.create_branch(repo_id=repo_id, branch=rev, repo_type="model", exist_ok=True)
            info = api.upload_folder(
                folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=rev,
                commit_message=commit_message or f"spp push {version.ref}",
            )
        except _network_errors() as exc:  # HTTP, auth, offline: all one line for the user
            raise RegistryError(f"cannot push {version.ref} to {repo_id}: {_first_line(exc)}") from None
    url = str(getattr(info, "commit_url", info))
    log.info("pushed %s to %s (%s)", version.ref, repo_id, url)
    return url


def read_card_metadata(folder: Path) -> dict[str, Any]:
    """The YAML metadata of ``folder/README.md`` ({} when there is no card)."""
    card = folder / CARD_FILE
    if not card.exists():
        return {}
    import yaml
    from huggingface_hub import ModelCard

    try:  # a card from elsewhere: a bounded, regular file
        text = read_bounded(card, limit=MAX_SIDE_FILE_BYTES).decode("utf-8")
        return ModelCard(text).data.to_dict()
    except OSError as exc:
        raise RegistryError(f"cannot read the model card {exc}") from None
    except (ValueError, yaml.YAMLError) as exc:  # malformed metadata in a downloaded card (or not UTF-8)
        raise RegistryError(f"{card}: cannot read the model card metadata: {_first_line(exc)}") from None


def import_hub_folder(
    registry: Registry,
    folder: str | Path,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    source: str | None = None,
) -> tuple[Version, bool]:
    """Publish the artifact of a pushed folder; the card's sha256 must match the file."""
    folder = Path(folder)
    info = read_card_metadata(folder).get("spp") or {}
    file_name = str(info.get("file") or ARTIFACT_FILE)
    if Path(file_name).name != file_name or file_name in ("..", "."):  # a card must not point outside its repo
        raise RegistryError(f"{source or folder}: model card names an invalid artifact file {file_name!r}")
    file = folder / file_name
    if not file.exists():
        candidates = sorted(p.name for p in folder.glob("*.safetensors"))
        if len(candidates) != 1:
            raise RegistryError(f"{folder}: expected {ARTIFACT_FILE} (found {', '.join(candidates) or 'no .safetensors'})")
        file = folder / candidates[0]
    try:  # bounded: a regular file of at most MAX_ARTIFACT_BYTES (publish reads it the same way)
        data = read_bounded(file)
    except OSError as exc:
        raise RegistryError(f"{source or folder}: cannot import {exc}") from None
    if info.get("sha256") and sha256_bytes(data) != info["sha256"]:
        raise IntegrityError(f"{source or folder}: {file.name} does not match the sha256 in its model card")
    tags = {k: str(v) for k, v in (info.get("tags") or {}).items()}
    if source:
        tags["hub"] = source
    return registry.publish(file, name=name or info.get("name"), aliases=aliases, tags=tags)


def pull(
    registry: Registry,
    spec: str,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    token: str | None = None,
    api: Any = None,
) -> tuple[Version, bool]:
    """Download ``owner/name[@rev]`` (card + one safetensors file) and import it.

    A dry run first lists the files with their sizes at one commit: a repo whose artifact is
    over :data:`~spp.prompts.artifact.files.MAX_ARTIFACT_BYTES` (or whose card is over
    ``MAX_SIDE_FILE_BYTES``) is refused before anything is downloaded, and the download then
    fetches exactly those files at that commit.
    """
    from huggingface_hub import HfApi

    repo_id, revision = parse_hub_spec(spec)
    api = api if api is not None else HfApi(token=token)
    try:
        planned = api.snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=[CARD_FILE, "*.safetensors"], dry_run=True
        )
        files, commit = _files_to_pull(spec, planned)
        folder = api.snapshot_download(repo_id=repo_id, revision=commit or revision, allow_patterns=files)
    except _network_errors() as exc:  # not found, offline, auth: one line
        raise RegistryError(f"cannot download {spec} from the Hub: {_first_line(exc)}") from None
    return import_hub_folder(registry, folder, name=name, aliases=aliases, source=spec)


def _files_to_pull(spec: str, planned: Sequence[Any]) -> tuple[list[str], str | None]:
    """(file names, commit) to download from a dry run's list; RegistryError when too large."""
    by_name = {f.filename: f for f in planned}
    tensors = sorted(n for n in by_name if n.endswith(".safetensors"))
    if ARTIFACT_FILE in by_name:
        tensors = [ARTIFACT_FILE]
    if len(tensors) != 1:
        raise RegistryError(f"{spec}: expected {ARTIFACT_FILE} in the repo (found {', '.join(tensors) or 'no .safetensors'})")
    files = [CARD_FILE, *tensors] if CARD_FILE in by_name else tensors
    for file in files:
        limit = MAX_SIDE_FILE_BYTES if file == CARD_FILE else MAX_ARTIFACT_BYTES
        size = by_name[file].file_size
        if size is not None and size > limit:
            raise RegistryError(f"{spec}: {file} is {size} bytes, more than the maximum of {limit} bytes; not downloaded")
    return files, by_name[tensors[0]].commit_hash


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises for HTTP, auth and offline failures (HfHubHTTPError is an OSError)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover - huggingface_hub >= 1.0 depends on httpx
        pass
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "ARTIFACT_FILE", "CARD_FILE", "build_hub_folder", "import_hub_folder", "is_hub_model_id", "model_card",
    "parse_hub_spec", "pull", "push", "read_card_metadata",
]
