"""Shared fixtures: real Redis, real PostgreSQL, and a live Hilum stack (uvicorn + celery worker)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

REDIS_HOST = "redis://127.0.0.1:6379"
PG_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[1]
# Our own Redis database numbers, one per stack, flushed before and after use.
REDIS_DBS = {"sqlite": 11, "postgres": 12}
# The processes the tests start are the ones docker-compose.yml names (tests/test_deploy.py checks).
API_COMMAND = ["uvicorn", "service.app:create_app", "--factory"]
WORKER_COMMAND = ["celery", "-A", "worker.celery_app", "worker"]


def delete_broker_keys(stack: Stack) -> None:
    """Remove this stack's keys (and only those) from the shared Redis."""
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    keys = list(client.scan_iter(match=stack.env["HILUM_BROKER_KEY_PREFIX"] + "*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def repository_stays_clean() -> Iterator[None]:
    """No test may write the default data dir (``./var``) into the repository: tests use tmp dirs."""
    existed = (REPO / "var").exists()
    yield
    assert existed or not (REPO / "var").exists(), "a test created var/ in the repository: give it a tmp data dir"


@pytest.fixture(scope="session")
def redis_available() -> None:
    try:
        redis.Redis.from_url(REDIS_HOST).ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (make test starts it: bash tests/services.sh)")


def create_pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database for one test stack; returns (url, name)."""
    import sqlalchemy as sa

    name = f"hilum_test_{secrets.token_hex(4)}"
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", name


def drop_pg_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@contextlib.contextmanager
def migrated_database(kind: str, folder: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite in ``folder`` or a fresh PostgreSQL one (dropped afterwards)."""
    from hilum.db import get_engine
    from hilum.migrate import upgrade_to_head

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'hilum.db'}"
        upgrade_to_head(url)
        yield url
        return
    url, name = create_pg_database()
    try:
        upgrade_to_head(url)
        yield url
    finally:
        get_engine(url).dispose()
        drop_pg_database(name)


@dataclass
class Stack:
    """A running Hilum: API over real HTTP, a Celery worker, Redis and a database."""

    base_url: str
    admin_key: str
    data_dir: Path
    env: dict[str, str]
    database_url: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def start_worker(self, name: str = "w1", queues: str = "gpu,ingest") -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *WORKER_COMMAND,
                "-Q",
                queues,
                "-c",
                "1",
                "-n",
                f"{name}@%h",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[f"worker-{name}"] = proc
        return proc

    def wait_worker_ready(self, name: str, timeout: float = 90) -> None:
        """Wait for the worker's "ready" line in its log (bounded)."""
        log = self.logs / f"worker-{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and " ready." in log.read_text(errors="replace"):
                return
            if self.procs[f"worker-{name}"].poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        raise RuntimeError(f"worker {name} not ready within {timeout} s")

    def start_api(self) -> None:
        log = open(self.logs / "api.log", "ab")  # noqa: SIM115
        port = int(self.base_url.rsplit(":", 1)[1])
        self.procs["api"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *API_COMMAND,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.procs["api"].poll() is not None:
                raise RuntimeError("uvicorn exited:\n" + (self.logs / "api.log").read_text()[-3000:])
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("uvicorn did not answer /healthz within 60 s")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_stack(tmp: Path, backend: str, *, redis_db: int | None = None) -> tuple[Stack, str | None]:
    pg_name = None
    if backend == "postgres":
        database_url, pg_name = create_pg_database()
    else:
        database_url = f"sqlite:///{tmp / 'hilum.db'}"
    redis_url = f"{REDIS_HOST}/{redis_db if redis_db is not None else REDIS_DBS[backend]}"
    key_prefix = f"hilum-test-{secrets.token_hex(4)}:"  # concurrent test runs never share a queue
    admin_key = "hk_test_admin_" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_")}
    env.update(
        HILUM_ENV="test",
        HILUM_DATA_DIR=str(tmp / "data"),
        HILUM_DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        HILUM_BOOTSTRAP_ADMIN_KEY=admin_key,
        HILUM_BROKER_KEY_PREFIX=key_prefix,
        HILUM_PROGRESS_INTERVAL_S="0.2",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",  # the same answers on a host with internet: never a hub download in tests
    )
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        base_url=f"http://127.0.0.1:{free_port()}",
        admin_key=admin_key,
        data_dir=tmp / "data",
        env=env,
        database_url=database_url,
        logs=logs,
    )
    return stack, pg_name


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[Stack]:
    """A live stack per database backend: uvicorn on a free port and one Celery worker."""
    backend = request.param
    s, pg_name = make_stack(tmp_path_factory.mktemp(f"stack-{backend}"), backend)
    try:
        s.start_api()
        s.start_worker()
        yield s
    finally:
        s.stop()
        delete_broker_keys(s)
        if pg_name:
            drop_pg_database(pg_name)


def wait_for(client: httpx.Client, path: str, done: set[str], timeout: float = 180.0) -> dict:
    """Poll ``path`` until its status is in ``done``; fail (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(path).json()
        if body.get("status") in done:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{path} still {body.get('status')!r} after {timeout} s: {body}")


# `hilum run` as a whole stack (issue 11: kill -9 and restart scenarios)


def start_hilum_run(tmp_path: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    """`hilum run` in its own process group (so a test can kill -9 the whole stack), output to run.log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_") and k != "REDIS_URL"}
    env.update(
        HILUM_DATA_DIR=str(tmp_path / "var"),
        HILUM_PORT=str(port),
        HILUM_BOOTSTRAP_ADMIN_KEY="hk_launch",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    log = open(tmp_path / "run.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "hilum.cli", "run"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json().get("broker") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"hilum run not healthy within {timeout} s (exit code {proc.poll()})")


def kill_stack(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 of the launcher and everything it started (one process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
