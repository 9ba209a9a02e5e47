"""The registry must not forget: a lost or replaced index is detected through the ledger kept
in the blob store, publish and gc refuse to run on it, and rebuild-index restores every
version under its own number."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from spp.cli.main import app
from spp.registry import Registry
from spp.registry.ledger import MismatchError


def test_an_index_behind_its_store_refuses_to_reuse_a_number(registry: Registry, make_artifact) -> None:
    """An index restored from an old copy (same identity, counters behind) on both backends."""
    v1, _ = registry.publish(make_artifact("rte", seed=1))
    with registry.index.engine.begin() as conn:  # what an old backup of the index looks like
        conn.execute(text("DELETE FROM versions"))
        conn.execute(text("UPDATE names SET last_version = 0"))
    with pytest.raises(MismatchError, match=r"is behind its blob store: rte@1 was already published") as info:
        registry.publish(make_artifact("rte", seed=2))
    assert "\n" not in str(info.value) and registry.list() == []
    assert registry.store.path(v1.sha256).is_file()


def test_a_deleted_index_is_detected_and_rebuilt(tmp_path: Path, make_artifact) -> None:
    root = tmp_path / "registry"
    reg = Registry(root)
    v1, _ = reg.publish(make_artifact("rte", seed=1), aliases=["prod"])
    v2, _ = reg.publish(make_artifact("rte", seed=2))
    v3, _ = reg.publish(make_artifact("rte", seed=3))
    cb, _ = reg.publish(make_artifact("cb", seed=4))
    reg.remove(v3.ref)
    reg.close()
    for path in root.glob("index.sqlite*"):
        path.unlink()

    fresh = Registry(root)
    with pytest.raises(MismatchError, match="does not belong to its blob store.*spp registry rebuild-index"):
        fresh.publish(make_artifact("rte", seed=5))
    with pytest.raises(MismatchError):
        fresh.gc()
    assert fresh.store.path(v1.sha256).is_file() and fresh.store.path(cb.sha256).is_file()  # nothing collected

    runner = CliRunner()
    result = runner.invoke(app, ["registry", "rebuild-index", "--registry", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert '"rebuilt": [\n    "cb@1",\n    "rte@1",\n    "rte@2"\n  ]' in result.stdout
    again = Registry(root)
    assert [(v.ref, v.sha256) for v in again.list()] == [(cb.ref, cb.sha256), (v1.ref, v1.sha256), (v2.ref, v2.sha256)]
    assert again.verify() == [] and again.gc() == []
    assert again.publish(make_artifact("rte", seed=5))[0].ref == "rte@4"  # 3 stays retired
    bad = runner.invoke(app, ["registry", "rebuild-index", "--registry", str(root)])
    assert bad.exit_code == 2 and "is not empty" in bad.output
