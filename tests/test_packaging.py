"""The wheel carries every module and data file of the source tree, under the spp namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = {"prompts": "spp/prompts", "registry": "spp/registry", "serve": "spp/serve", "cli": "spp/cli", "sweep": "spp/sweep"}


def _expected() -> set[str]:
    out = set()
    for folder, target in TOP.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                out.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return out


@pytest.mark.timeout(300)
def test_the_wheel_holds_every_module_and_config(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=280,
    )
    (wheel,) = tmp_path.glob("spp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected() - names)
    assert not missing, f"pyproject's package list misses: {missing}"
    # no generic top-level names are installed (everything lives under spp/)
    tops = {n.split("/")[0] for n in names if not n.startswith("spp-")}
    assert tops == {"spp"}
