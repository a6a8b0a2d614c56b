"""`hilum run`: API, worker and embedded Redis start together; SIGINT (Ctrl-C) stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.e2e


def test_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_") and k != "REDIS_URL"}
    env.update(HILUM_DATA_DIR=str(tmp_path / "var"), HILUM_PORT=str(port), HILUM_BOOTSTRAP_ADMIN_KEY="hk_launch")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilum.cli", "run"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert health == {"status": "ok", "database": "ok", "broker": "ok"}
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "uvicorn" in names and "celery" in names
        r = httpx.get(f"http://127.0.0.1:{port}/v1/keys", headers={"Authorization": "Bearer hk_launch"})
        assert r.status_code == 200
        # Wait for the worker to be ready, so its shutdown path is the real one.
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.stdout.read().decode() if proc.stdout else ""
    assert "Ctrl-C" in out
    assert (tmp_path / "var" / "hilum.db").exists()


def test_one_worker_process_per_gpu() -> None:
    from hilum.launcher import worker_commands
    from hilum.settings import Settings

    cpu = worker_commands(Settings(_env_file=None, worker_gpus=""), {"A": "1"})
    assert len(cpu) == 1 and "CUDA_VISIBLE_DEVICES" not in cpu[0][2]
    gpus = worker_commands(Settings(_env_file=None, worker_gpus="0,1"), {"A": "1"})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, _, env in gpus] == ["0", "1"]
    assert [argv[argv.index("-n") + 1].split("@")[0] for _, argv, _ in gpus] == ["gpu0", "gpu1"]
    assert all(argv[argv.index("-c") + 1] == "1" for _, argv, _ in gpus)  # one job per GPU at a time


def test_worker_only_host_joins_the_shared_redis(tmp_path: Path) -> None:
    import redis

    url = "redis://127.0.0.1:6379/15"
    redis.Redis.from_url(url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_")}
    env.update(REDIS_URL=url, HILUM_WORKER_GPUS="0,1", HILUM_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilum.cli", "worker"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        from celery import Celery

        app = Celery(broker=url)
        deadline = time.monotonic() + 90
        replies: list = []
        while time.monotonic() < deadline and len(replies) < 2:
            replies = app.control.ping(timeout=1.0) or []
        names = sorted(next(iter(r)) for r in replies)
        assert [n.split("@")[0] for n in names] == ["gpu0", "gpu1"]
        children = psutil.Process(proc.pid).children()
        assert sorted(c.environ().get("CUDA_VISIBLE_DEVICES") for c in children) == ["0", "1"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        redis.Redis.from_url(url).flushdb()
