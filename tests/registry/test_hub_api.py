"""push and pull through HfApi. No Hub server can run here (tests are offline), so HfApi's
network methods are replaced at the class boundary: every call is bound to the real method's
signature (a call the real client would refuse fails the test) and recorded, and the test
asserts the arguments. Uploaded files land in a folder that the fake snapshot_download serves."""

from __future__ import annotations

import fnmatch
import inspect
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from spp.prompts.artifact.files import MAX_ARTIFACT_BYTES
from spp.prompts.tasks import get_task
from spp.registry import Registry, RegistryError
from spp.registry import hub

COMMIT = "c" * 40


class HubRecorder:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        from huggingface_hub import HfApi

        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.remote = root / "remote"
        self.remote.mkdir()
        self.downloads = root / "downloads"
        handlers = {"create_repo": lambda **kw: None, "create_branch": lambda **kw: None,
                    "upload_folder": self._upload, "snapshot_download": self._download}
        for name, handler in handlers.items():
            monkeypatch.setattr(HfApi, name, self._recording(name, getattr(HfApi, name), handler))

    def _recording(self, name: str, real, handler):
        signature = inspect.signature(real)

        def method(api, *args, **kwargs):
            arguments = signature.bind(api, *args, **kwargs).arguments  # TypeError if the real one would refuse
            arguments.pop("self")
            self.calls.append((name, dict(arguments)))
            return handler(**arguments)

        return method

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for n, kwargs in self.calls if n == name]

    def _upload(self, folder_path, **_):
        for path in Path(folder_path).iterdir():
            shutil.copy(path, self.remote / path.name)
        return type("CommitInfo", (), {"commit_url": f"https://hub.example/commit/{COMMIT}"})()

    def _download(self, repo_id, allow_patterns=None, dry_run=False, **_):
        from huggingface_hub.file_download import DryRunFileInfo

        files = [p for p in sorted(self.remote.iterdir())
                 if allow_patterns is None or any(fnmatch.fnmatch(p.name, pat) for pat in allow_patterns)]
        if dry_run:
            return [DryRunFileInfo(commit_hash=COMMIT, file_size=p.stat().st_size, filename=p.name, local_path=str(p),
                                   is_cached=False, will_download=True) for p in files]
        out = self.downloads / repo_id.replace("/", "--")
        out.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy(path, out / path.name)
        return str(out)


@pytest.fixture
def hub_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubRecorder:
    return HubRecorder(monkeypatch, tmp_path)


@pytest.fixture
def published(registry: Registry, make_artifact):
    version, _ = registry.publish(make_artifact("rte", seed=7))
    return version


def test_push_leaves_visibility_to_the_hub_and_pull_round_trips(registry, published, hub_api, tmp_path) -> None:
    url = hub.push(registry, "rte@1", "me/rte-prompt")
    assert url.endswith(COMMIT)
    assert hub_api.names() == ["create_repo", "upload_folder"]  # no branch to create for the default one
    assert hub_api.args("create_repo") == [{"repo_id": "me/rte-prompt", "repo_type": "model", "private": None,
                                            "exist_ok": True}]
    assert hub_api.args("upload_folder")[0]["revision"] is None
    other = Registry(tmp_path / "other")
    version, created = hub.pull(other, "me/rte-prompt@v1")
    dry, real = hub_api.args("snapshot_download")
    assert dry["dry_run"] is True and dry["revision"] == "v1"
    assert real["revision"] == COMMIT and real["allow_patterns"] == ["README.md", "prompt.safetensors"]
    assert created and version.sha256 == published.sha256 and version.tags["hub"] == "me/rte-prompt@v1"


@pytest.mark.parametrize("private", [True, False])
def test_push_passes_an_explicit_visibility(registry, published, hub_api, private: bool) -> None:
    hub.push(registry, "rte", "me/x", private=private)
    assert hub_api.args("create_repo")[0]["private"] is private


def test_push_to_a_branch_creates_it_first(registry, published, hub_api) -> None:
    hub.push(registry, "rte", "me/x", revision="experiments")
    assert hub_api.names() == ["create_repo", "create_branch", "upload_folder"]
    assert hub_api.args("create_branch") == [{"repo_id": "me/x", "branch": "experiments", "repo_type": "model",
                                              "exist_ok": True}]
    assert hub_api.args("upload_folder")[0]["revision"] == "experiments"


def test_push_to_a_pull_request_creates_no_branch(registry, published, hub_api) -> None:
    hub.push(registry, "rte", "me/x@refs/pr/3")
    assert hub_api.names() == ["create_repo", "upload_folder"]
    assert hub_api.args("upload_folder")[0]["revision"] == "refs/pr/3"


def test_cli_visibility_is_tri_state(registry, published, hub_api) -> None:
    from spp.cli.main import app

    for flags, expected in (([], None), (["--private"], True), (["--public"], False)):
        result = CliRunner().invoke(app, ["push", "rte", "--repo", "me/x", "--registry", str(registry.location), *flags])
        assert result.exit_code == 0, result.output
        assert hub_api.args("create_repo")[-1]["private"] is expected


def test_pull_refuses_an_oversized_artifact_before_downloading(registry, published, hub_api, tmp_path) -> None:
    hub.push(registry, "rte", "me/x")
    with open(hub_api.remote / hub.ARTIFACT_FILE, "r+b") as fh:
        fh.truncate(MAX_ARTIFACT_BYTES + 1)  # sparse
    with pytest.raises(RegistryError, match=f"prompt.safetensors is {MAX_ARTIFACT_BYTES + 1} bytes, more than the max"):
        hub.pull(Registry(tmp_path / "other"), "me/x")
    assert [kw.get("dry_run") for kw in hub_api.args("snapshot_download")] == [True]  # nothing downloaded


# --------------------------------------------------------------------------- the model card
def _card(registry: Registry, tmp_path: Path) -> tuple[str, dict]:
    folder = hub.build_hub_folder(registry, "mnli", tmp_path / "card")
    text = (folder / hub.CARD_FILE).read_text()
    return text, yaml.safe_load(text.split("---\n")[1])


def _results(meta: dict) -> dict[str, dict]:
    return {r["dataset"]["name"]: r["dataset"] for r in meta["model-index"][0]["results"]}


MNLI_ORIGINS = {"train": {"hub_split": "train", "derived": "1000 held out as validation (seed 0)"},
                "validation": {"hub_split": "train", "derived": "held out of train (seed 0)"},
                "test": {"hub_split": "validation_matched", "derived": "official validation used as test"}}


def test_a_card_for_local_data_names_the_hub_dataset_and_split_never_a_path(registry, make_artifact, tmp_path) -> None:
    dataset = {"id": "/home/me/glue/MNLI", "config": None, "revision": None, "format": "tsv", "split": "train.tsv",
               "hub_split": "train", "splits": MNLI_ORIGINS}
    registry.publish(make_artifact("mnli", task_spec=get_task("mnli").to_dict(), dataset=dataset,
                                   metrics={"test": {"accuracy": 0.8}, "validation": {"accuracy": 0.7}}))
    text, meta = _card(registry, tmp_path)
    assert "/home/me" not in text
    results = _results(meta)
    test = results["mnli (official validation used as test)"]
    assert (test["type"], test["config"], test["split"]) == ("nyu-mll/glue", "mnli", "validation_matched")
    assert "revision" not in test  # local copies have no Hub revision
    assert results["mnli (held out of train (seed 0))"]["split"] == "train"


def test_a_card_for_hub_data_passes_the_resolved_revision(registry, make_artifact, tmp_path) -> None:
    dataset = {"id": "nyu-mll/glue", "config": "mnli", "revision": "f" * 40, "format": "hub",
               "split": "train", "hub_split": "train", "splits": MNLI_ORIGINS}
    registry.publish(make_artifact("mnli", task_spec=get_task("mnli").to_dict(), dataset=dataset,
                                   metrics={"test": {"accuracy": 0.8}}))
    _, meta = _card(registry, tmp_path)
    (test,) = _results(meta).values()
    assert (test["type"], test["split"], test["revision"]) == ("nyu-mll/glue", "validation_matched", "f" * 40)


def test_a_card_for_a_custom_task_on_local_files_names_no_dataset_path(registry, make_artifact, tmp_path) -> None:
    registry.publish(make_artifact("mnli", dataset={"id": "/srv/data/mine", "format": "jsonl"},
                                   metrics={"validation": {"accuracy": 0.5}}))
    text, meta = _card(registry, tmp_path)
    assert "/srv/data" not in text and _results(meta)["mnli"]["type"] == "mnli"
