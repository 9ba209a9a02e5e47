"""Method flags are generated from the method config fields (`spp train`, `spp methods`), and the
CLI starts without torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from spp.cli.main import app
from spp.prompts.artifact import load_artifact
from spp.prompts.config import field_help, option
from spp.prompts.methods import METHODS, MethodConfig, PromptMethod, get_method, method_names

runner = CliRunner()


@dataclass
class ToyConfig(MethodConfig):
    sharpness: float = option(2.0, help="Scale of the toy prompt (test only).", min=0)
    frozen: bool = option(False, help="Freeze the toy prompt (test only).")
    bottleneck: int = option(7, help="Toy bottleneck width (test only).", min=1)
    weights: tuple = option((1.0,), help="Toy weights as JSON (test only).")
    secret: str = option("x", help="Never a flag (test only).", cli=False)


class ToyMethod(PromptMethod):
    """A prompt scaled by ``sharpness``: enough to train, count and save."""

    name: ClassVar[str] = "toy"
    config_cls: ClassVar[type[MethodConfig]] = ToyConfig
    default_lr: ClassVar[float] = 0.01
    default_weight_decay: ClassVar[float] = 0.0

    def __init__(self, config, ctx) -> None:
        super().__init__(config, ctx)
        self.prompt = nn.Parameter(torch.zeros(config.n_tokens, ctx.d_model), requires_grad=not config.frozen)

    def forward(self) -> torch.Tensor:
        return self.prompt * self.config.sharpness  # (n, e)


@pytest.fixture
def toy_method(monkeypatch: pytest.MonkeyPatch) -> type[PromptMethod]:
    method_names()  # the built-in methods are registered first
    monkeypatch.setitem(METHODS, "toy", ToyMethod)
    return ToyMethod


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "240"})  # no flag name cut short
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())  # one line, table borders and wrapping gone


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """`spp methods` records the method options it was given instead of counting."""
    seen: list[dict] = []

    def fake_counts(backbone: str, options: dict) -> dict:
        seen.append(dict(options))
        return {"backbone": backbone, "methods": []}

    monkeypatch.setattr("spp.prompts.train.pipeline.method_param_counts", fake_counts)
    return seen


def test_every_method_field_has_a_flag_with_its_help() -> None:
    text = help_text("train")
    for name in method_names():
        for f in dataclasses.fields(get_method(name).config_cls):
            flag = "--" + f.name.replace("_", "-")
            assert flag in text and field_help(f) in text, (name, f.name)
    assert "--softmax --no-softmax" in text and "--shared --no-shared,--per-token" in text
    assert "residual: Hidden width of the residual MLP. [128]" in text  # a shared field names each method
    assert "attempt: Width of the attention sub-network. [100]" in text


def test_a_new_config_field_becomes_a_flag(toy_method) -> None:
    for command in ("train", "methods"):
        text = help_text(command)
        assert "--sharpness" in text and "toy: Scale of the toy prompt (test only). [2.0]" in text
        assert "--frozen --no-frozen" in text and "toy: Freeze the toy prompt (test only). [--no-frozen]" in text
        assert "toy: Toy bottleneck width (test only). [7]" in text and "residual: Hidden width" in text
        assert "--weights" in text and "--secret" not in text
    assert "--sharpness" not in help_text("eval")


def test_only_the_flags_given_reach_the_method(toy_method, counted) -> None:
    args = ["methods", "--sharpness", "3", "--no-frozen", "--weights", "[0.5, 2]", "--per-token", "--json"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, ["methods", "--no-shared", "--json"]).exit_code == 0
    assert runner.invoke(app, ["methods", "--json"]).exit_code == 0
    assert counted == [{"sharpness": 3.0, "frozen": False, "weights": [0.5, 2], "shared": False},
                       {"shared": False}, {}]


def test_a_generated_flag_trains_a_registered_method(toy_method, tiny_backbone_dir, demo_data, tmp_path) -> None:
    out = tmp_path / "toy.safetensors"
    result = runner.invoke(app, [
        "train", str(demo_data["topic"]), "--method", "toy", "--backbone", str(tiny_backbone_dir), "--sharpness", "0.5",
        "--n-tokens", "3", "--max-steps", "1", "--max-train-samples", "16", "--max-eval-samples", "16", "--out",
        str(out), "--json"])
    assert result.exit_code == 0, result.output
    config = load_artifact(out).meta.method_config
    assert (config["sharpness"], config["n_tokens"], config["frozen"], config["bottleneck"]) == (0.5, 3, False, 7)


def test_unset_flags_keep_each_methods_default(tiny_backbone_dir, demo_data, tmp_path) -> None:
    common = ["--backbone", str(tiny_backbone_dir), "--max-steps", "1", "--max-train-samples", "16",
              "--max-eval-samples", "16", "--json"]
    ept, residual = tmp_path / "ept.safetensors", tmp_path / "residual.safetensors"
    assert runner.invoke(app, ["train", str(demo_data["topic"]), "--method", "ept", "--out", str(ept), *common]).exit_code == 0
    result = runner.invoke(app, ["train", str(demo_data["topic"]), "--method", "residual", "--per-token",
                                 "--bottleneck", "8", "--out", str(residual), *common])
    assert result.exit_code == 0, result.output
    assert load_artifact(ept).meta.n_tokens == 1  # EPT's own default, not another method's 10
    config = load_artifact(residual).meta.method_config
    assert (config["shared"], config["bottleneck"], config["n_tokens"]) == (False, 8, 10)


def test_a_flag_of_another_method_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["train", "rte", "--method", "ept", "--no-softmax"])
    assert result.exit_code == 2 and "--softmax does not apply to method ept" in result.output
    assert "Traceback" not in result.output


def test_the_cli_starts_without_torch() -> None:
    code = ("import sys\nfrom spp.cli.main import app\n"
            "for args in (['--help'], ['list', '--help'], ['serve', '--help'], ['eval', '--help']):\n"
            "    try:\n        app(args)\n    except SystemExit as e:\n        assert e.code == 0, args\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_bad_choices_fail_before_loading_anything(tmp_path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "absent.safetensors"), "--mode", "beam"])
    assert result.exit_code == 2 and "--mode must be one of rank, generate; got 'beam'" in result.output
    result = runner.invoke(app, ["transfer", "--recommend", "rte", "--by", "l2", "--registry", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--by must be one of mean_cosine, token_cosine; got 'l2'" in result.output
    assert not (tmp_path / "r").exists()
