"""The s3:// blob store code path, against moto's S3 server on 127.0.0.1.

moto is a MOCK of S3 (no real object store can run offline here): this test covers spp's
fsspec/s3fs code path (put, read, size, digest, list, delete), not S3's own guarantees. The
index is a real PostgreSQL server.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from spp.registry import IntegrityError, Registry

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch):
    import fsspec.config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}})
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("prompts")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_s3_store_publish_load_verify_gc(s3_bucket, postgres, tmp_path: Path, make_artifact) -> None:
    url = postgres.url(postgres.create_database(), store="s3://prompts/team-a")
    reg = Registry(url, cache_dir=tmp_path / "cache")
    v1, created = reg.publish(make_artifact("rte", seed=1), aliases=["prod"])
    v2, _ = reg.publish(make_artifact("rte", seed=2))
    assert created and reg.publish(make_artifact("rte", seed=1))[0] == v1
    key = f"prompts/team-a/blobs/{v1.sha256[:2]}/{v1.sha256}.safetensors"
    assert s3_bucket.cat_file(key)[:8] == reg.blob_path(v1).read_bytes()[:8]  # the cache holds the same bytes

    fresh = Registry(url, cache_dir=tmp_path / "cache2")  # another host: empty cache, fetches from S3
    version, artifact = fresh.load("rte@prod")
    assert version == v1 and artifact.prompt.shape == (4, 16)
    assert (tmp_path / "cache2" / "blobs" / v1.sha256[:2] / f"{v1.sha256}.safetensors").is_file()
    assert fresh.verify() == []

    data = bytearray(s3_bucket.cat_file(key))
    data[-2] ^= 1
    s3_bucket.pipe_file(key, bytes(data))
    assert [(v.ref, r.split(" (")[0]) for v, r in fresh.verify()] == [("rte@1", "blob sha256 mismatch")]
    with pytest.raises(IntegrityError, match="rte@1: blob sha256 mismatch"):
        Registry(url, cache_dir=tmp_path / "cache3").load("rte@1")
    assert fresh.load("rte@1")[0] == v1  # a verified cached copy keeps serving

    s3_bucket.pipe_file("prompts/team-a/blobs/00/" + "00" * 32 + ".safetensors", b"orphan")
    reg.remove(v2.ref)
    assert reg.gc() == ["s3://prompts/team-a/blobs/00/" + "00" * 32 + ".safetensors"]
    assert sorted(s3_bucket.find("prompts/team-a/blobs")) == [key]
