"""PEFT interop: export a prompt as a PEFT prompt-tuning adapter, import one as an artifact.

PEFT (0.13 ... 0.21) stores a prompt-tuning adapter as ``adapter_model.safetensors`` with one
tensor ``prompt_embeddings`` of shape (num_virtual_tokens x num_transformer_submodules,
token_dim) (see ``peft.tuners.tuners_utils.BasePromptEncoder._get_adapter_state_dict``) and
``adapter_config.json``. For ``SEQ_2_SEQ_LM`` models PEFT's forward prepends the first
``num_virtual_tokens`` rows to the encoder input only, exactly where spp puts its prompt (Lester
et al. 2021, arXiv:2104.08691), so the exported adapter scores identically under PEFT. We export
with ``num_transformer_submodules = 1`` (just those rows); on import, only the encoder rows of
an adapter saved with 2 submodules are kept, since they are all that PEFT uses.

Export also writes ``spp_artifact.json`` (the artifact's full metadata), which PEFT ignores and
which makes export -> import lossless (state tensors aside). A foreign adapter has no such file:
its backbone must then be loaded once to take the fingerprint that every artifact carries.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spp.prompts.config import check_int
from spp.registry.errors import RegistryError

if TYPE_CHECKING:
    from spp.prompts.artifact import Artifact, ArtifactMeta
    from spp.prompts.backbone import Backbone

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SPP_SIDECAR = "spp_artifact.json"
PEFT_KEY = "prompt_embeddings"
IMPORTED_METHOD = "simple"  # a PEFT prompt-tuning adapter is a vanilla (Lester) prompt


class PeftError(RegistryError):
    """A PEFT adapter cannot be written or is not an importable T5 prompt-tuning adapter."""


def backbone_shape(backbone: str) -> tuple[int | None, int | None]:
    """(num_layers, num_heads) of a backbone when known without downloading, else Nones.

    PEFT fills missing values from the model it loads the adapter onto; they only matter to
    prefix tuning, so unknown values are harmless.
    """
    from spp.prompts.backbone import RANDOM_PREFIX, BackboneError, random_config

    config: dict[str, Any] | None = None
    if backbone.startswith(RANDOM_PREFIX):
        try:
            config = random_config(backbone[len(RANDOM_PREFIX):]).to_dict()
        except BackboneError:
            config = None
    elif (Path(backbone) / "config.json").is_file():
        config = json.loads((Path(backbone) / "config.json").read_text())
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(backbone, "config.json")
            if isinstance(cached, str):
                config = json.loads(Path(cached).read_text())
        except (ValueError, OSError):  # not a valid repo id, unreadable cache
            config = None
    if not config:
        return None, None
    return config.get("num_layers"), config.get("num_heads")


def adapter_config(meta: "ArtifactMeta", *, num_layers: int | None = None, num_heads: int | None = None) -> dict[str, Any]:
    """The adapter_config.json of a T5 encoder prompt (PromptTuningConfig field names)."""
    if num_layers is None or num_heads is None:
        known_layers, known_heads = backbone_shape(meta.backbone)
        num_layers = num_layers if num_layers is not None else known_layers
        num_heads = num_heads if num_heads is not None else known_heads
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM",
        "num_virtual_tokens": meta.n_tokens,
        "token_dim": meta.d_model,
        "num_transformer_submodules": 1,  # encoder only, as spp prompts are applied
        "num_attention_heads": num_heads,
        "num_layers": num_layers,
        "base_model_name_or_path": meta.backbone,
        "revision": meta.backbone_revision,
        "inference_mode": True,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "auto_mapping": None,
        "modules_to_save": None,
    }


def export_peft(
    artifact: "Artifact", out_dir: str | os.PathLike[str], *, num_layers: int | None = None, num_heads: int | None = None
) -> Path:
    """Write ``adapter_model.safetensors``, ``adapter_config.json`` and ``spp_artifact.json``."""
    from safetensors.torch import save_file

    artifact.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PeftError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    prompt = artifact.prompt.detach().float().cpu().contiguous()  # (n, e)
    save_file({PEFT_KEY: prompt}, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = adapter_config(artifact.meta, num_layers=num_layers, num_heads=num_heads)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    sidecar = {"note": "spp artifact metadata; PEFT ignores this file", "metadata": artifact.meta.to_header()}
    (out / SPP_SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return out


def import_peft(
    adapter_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    backbone: "Backbone | None" = None,
    allow_base_mismatch: bool = False,
) -> "Artifact":
    """Build an artifact from a PEFT prompt-tuning adapter directory.

    ``task``: a catalog task name or task spec file (required unless the adapter was exported
    by spp). ``backbone``: the loaded backbone, required for foreign adapters (fingerprint);
    when given, it must match the adapter's d_model (and the spp fingerprint, if recorded).
    A foreign adapter records the model it was trained on (``base_model_name_or_path``): a
    different backbone is refused, since the artifact would carry that backbone's fingerprint
    and be served with it, unless ``allow_base_mismatch`` (the user vouches for the pairing).
    """
    from spp.prompts.artifact import Artifact, ArtifactError, ArtifactMeta

    folder = Path(adapter_dir)
    config, prompt = read_adapter(folder)  # prompt: (n, e)
    sidecar = folder / SPP_SIDECAR
    try:
        if sidecar.exists():
            meta = ArtifactMeta.from_header(json.loads(_read_small(sidecar))["metadata"])
            if backbone is not None:
                backbone.check_prompt(meta.fingerprint, int(prompt.shape[1]), what=f"adapter {folder}")
        else:
            _check_base(folder, config, backbone, allow_base_mismatch)
            meta = _foreign_meta(folder, config, prompt, task, backbone)
        if task is not None and task != meta.task:
            meta.task, meta.task_spec = _task_fields(task)
        meta.n_tokens, meta.d_model = int(prompt.shape[0]), int(prompt.shape[1])
        artifact = Artifact(prompt=prompt, meta=meta)
        artifact.validate()
    except (ArtifactError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise PeftError(f"{folder}: cannot import the adapter: {exc}") from None
    return artifact


def _read_small(path: Path) -> str:
    """A side file (config, sidecar) of an adapter from elsewhere: bounded, regular, UTF-8."""
    from spp.prompts.artifact.files import MAX_SIDE_FILE_BYTES, read_bounded

    try:
        return read_bounded(path, limit=MAX_SIDE_FILE_BYTES).decode("utf-8")
    except OSError as exc:
        raise PeftError(f"cannot read {exc}") from None
    except UnicodeDecodeError:
        raise PeftError(f"{path}: not UTF-8 text") from None


def read_adapter(adapter_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    """(adapter config, (n, e) encoder prompt) of a PEFT prompt-tuning adapter, checked."""
    folder = Path(adapter_dir)
    config = _read_config(folder)
    return config, _read_prompt(folder, config)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    if not path.exists():
        raise PeftError(f"{folder}: no {ADAPTER_CONFIG} (not a PEFT adapter directory)")
    try:
        config = json.loads(_read_small(path))
    except json.JSONDecodeError as exc:
        raise PeftError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise PeftError(f"{path}: expected a JSON object")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PeftError(f"{path}: peft_type is {config.get('peft_type')!r}; only PROMPT_TUNING adapters can be imported")
    if config.get("task_type") != "SEQ_2_SEQ_LM":
        raise PeftError(f"{path}: task_type is {config.get('task_type')!r}; spp imports SEQ_2_SEQ_LM (T5) adapters")
    n = config.get("num_virtual_tokens")
    check_int(f"{path}: num_virtual_tokens", n, PeftError)
    return config


def _read_prompt(folder: Path, config: dict[str, Any]):
    from safetensors import SafetensorError
    from safetensors.torch import load

    from spp.prompts.artifact.files import read_bounded

    path = folder / ADAPTER_WEIGHTS
    if not path.exists():
        pickled = " (adapter_model.bin is a pickle, which spp never loads)" if (folder / "adapter_model.bin").exists() else ""
        raise PeftError(f"{folder}: no {ADAPTER_WEIGHTS}{pickled}")
    try:
        data = read_bounded(path)  # regular files up to MAX_ARTIFACT_BYTES only
    except OSError as exc:
        raise PeftError(f"cannot read {exc}") from None
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise PeftError(f"{path}: not a valid safetensors file ({exc})") from None
    if PEFT_KEY not in tensors:
        raise PeftError(f"{path}: no {PEFT_KEY!r} tensor (found: {', '.join(sorted(tensors)) or 'none'})")
    weights = tensors[PEFT_KEY]  # (n * submodules, e)
    n, dim = config["num_virtual_tokens"], config.get("token_dim")
    if weights.ndim != 2 or weights.shape[0] % n != 0 or (dim is not None and weights.shape[1] != dim):
        raise PeftError(
            f"{path}: {PEFT_KEY} has shape {tuple(weights.shape)}, expected (k x {n}, {dim}) for num_virtual_tokens={n}"
        )
    return weights[:n].float().contiguous()  # (n, e): the encoder rows, the only ones PEFT's seq2seq forward uses


def _check_base(folder: Path, config: dict[str, Any], backbone: "Backbone | None", allow: bool) -> None:
    """Refuse a backbone other than the one the adapter names (same Hub id, or same directory)."""
    base = config.get("base_model_name_or_path")
    if backbone is None or not isinstance(base, str) or not base or same_model(base, backbone.name):
        return
    if not allow:
        raise PeftError(
            f"{folder}: the adapter was trained on {base!r}, not on the backbone {backbone.name!r}; load {base!r} "
            "(--backbone) or, if they really are the same model, pass --allow-base-mismatch"
        )
    log.warning("importing %s (trained on %s) with backbone %s as asked", folder, base, backbone.name)


def same_model(a: str, b: str) -> bool:
    """Whether two backbone names mean the same model: equal Hub ids (case-insensitive, as the
    Hub resolves them) or paths to the same directory."""
    if Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def _foreign_meta(folder: Path, config: dict[str, Any], prompt, task: str | None, backbone: "Backbone | None") -> "ArtifactMeta":
    from spp.prompts.artifact import ArtifactMeta

    if task is None:
        raise PeftError(f"{folder}: the adapter was not exported by spp; say which task it is for (--task)")
    if backbone is None:
        base = config.get("base_model_name_or_path")
        raise PeftError(f"{folder}: the adapter was not exported by spp; load its backbone ({base}) to fingerprint it")
    backbone.check_prompt(backbone.fingerprint, int(prompt.shape[1]), what=f"adapter {folder}")
    n = int(prompt.shape[0])
    name, spec = _task_fields(task)
    return ArtifactMeta(
        task=name, task_spec=spec, method=IMPORTED_METHOD, backbone=backbone.name, backbone_revision=backbone.revision,
        fingerprint=backbone.fingerprint, d_model=int(prompt.shape[1]), n_tokens=n,
        method_config={"n_tokens": n}, trainable_params=int(prompt.numel()),
        hparams={"imported_from": "peft", "peft_config": config},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _task_fields(task: str) -> tuple[str, dict[str, Any]]:
    """(task name, task spec dict) from the catalog or a spec file; unknown names keep no spec."""
    from spp.prompts.tasks import get_task
    from spp.prompts.tasks import TaskError

    try:
        spec = get_task(task)
    except TaskError as exc:
        if task.lower().endswith((".json", ".toml")):  # a spec file: a problem in it (a hostile template) is an error
            raise PeftError(str(exc)) from None
        log.warning("task %r is not in the catalog; the artifact will carry no task spec", task)
        return task, {}
    return spec.name, spec.to_dict()
