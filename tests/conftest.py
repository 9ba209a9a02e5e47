"""Shared fixtures: everything offline, tiny, and built by the tests themselves."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# --dtype auto measures bf16 against float32 on the model's GEMM shape; for the tests' tiny model
# that measurement sits near the threshold and flips between runs, and in bf16 near-tie answers
# round differently. Tests pin it (subprocesses inherit it); tests of the choice itself unset it.
os.environ.setdefault("SPP_CPU_DTYPE", "float32")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretrained-on-synthetic-tasks T5 saved as a local model directory (see spp.prompts.demo)."""
    from spp.prompts.demo.toy import make_tiny_backbone_dir

    return make_tiny_backbone_dir(tmp_path_factory.mktemp("tiny-t5") / "model")


@pytest.fixture(scope="session")
def tiny_backbone(tiny_backbone_dir: Path):
    """The tiny backbone loaded through the real local-directory path, frozen, CPU, float32."""
    from spp.prompts.backbone import load_backbone

    return load_backbone(str(tiny_backbone_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data of the two demo tasks: {task name: path of its task.json spec}, files beside it."""
    from spp.prompts.demo.toy import TASKS, write_demo_task

    root = tmp_path_factory.mktemp("demo-data")
    return {name: write_demo_task(root, name, n_train=200, n_eval=100) for name in TASKS}


@pytest.fixture
def spp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry directory, also exported as $SPP_HOME."""
    home = tmp_path / "spp-home"
    monkeypatch.setenv("SPP_HOME", str(home))
    return home


@pytest.fixture
def unchecked_templates(monkeypatch: pytest.MonkeyPatch):
    """A context manager under which artifact metadata accepts any template, as an older spp or
    another writer would have written it: how the tests plant hostile artifacts in files and
    registries (the check lives in one place, ``spp.prompts.artifact.meta.parse_template``)."""
    from contextlib import contextmanager

    import spp.prompts.artifact.meta as meta_module

    @contextmanager
    def unchecked():
        with monkeypatch.context() as patch:
            patch.setattr(meta_module, "parse_template", lambda template: ())
            yield

    return unchecked


# --- a real PostgreSQL server for the shared-registry tests ---------------------------------------
PG_BIN = Path(os.environ.get("SPP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_PASSWORD = "spp-test-secret"


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 in a temp directory (initdb + pg_ctl).

    PostgreSQL refuses to run as root, so as root every command runs as the `postgres` user.
    Host logins need a password (scram): the tests pass it the way users do, in PGPASSWORD.
    """

    def __init__(self, base: Path) -> None:
        import getpass
        import socket

        self.base, self.data = base, base / "data"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if getpass.getuser() == "root" else []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (base / "pw").write_text(PG_PASSWORD + "\n")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={base / 'pw'}", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run([*self.as_postgres, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.base} -F -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.base / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, db: str = "postgres", *, password: str | None = None, store: str | None = None) -> str:
        auth = f"postgres:{password}" if password is not None else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}" + (f"?store={store}" if store else "")

    def create_database(self) -> str:
        import uuid

        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), password=PG_PASSWORD, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name


def _start_postgres() -> "PostgresServer":
    import shutil
    import tempfile

    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="spp-pg-"))
    base.chmod(0o777)  # the postgres user writes the cluster, its socket and its log here
    try:
        return PostgresServer(base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (each test gets its own database: `pg_registry_url`)."""
    import shutil

    old = os.environ.get("PGPASSWORD")
    server = _start_postgres()
    os.environ["PGPASSWORD"] = PG_PASSWORD  # libpq reads it, in this process and its children
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(server.base, ignore_errors=True)
        if old is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old


@pytest.fixture
def pg_registry_url(postgres, tmp_path: Path) -> str:
    """A shared registry location: a fresh database on the session server + a file:// store."""
    return postgres.url(postgres.create_database(), store=f"file://{tmp_path / 'store'}")
