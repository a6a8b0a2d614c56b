"""`hilum run`: API, worker and embedded Redis start together; SIGINT (Ctrl-C) stops them all."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.conftest import REDIS_HOST, free_port, kill_stack, start_hilum_run, wait_healthy

pytestmark = pytest.mark.e2e
LAUNCHER_REDIS_DB = 10  # ours alone (tests/test_queue.py uses 15); we delete only our prefix's keys


def test_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_") and k != "REDIS_URL"}
    env.update(HILUM_DATA_DIR=str(tmp_path / "var"), HILUM_PORT=str(port), HILUM_BOOTSTRAP_ADMIN_KEY="hk_launch")
    log = tmp_path / "run.log"
    with log.open("ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "hilum.cli", "run"],
            env=env,
            cwd=tmp_path,  # nothing may land in the repository
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so kill_stack can clean up after a failure
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
        deadline = time.monotonic() + 90
        while " ready." not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and proc.poll() is None, "the worker never became ready"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if proc.poll() is None:
            kill_stack(proc)
    assert "Ctrl-C" in log.read_text()
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
    from hilum.queue import make_celery
    from hilum.settings import Settings

    url = f"{REDIS_HOST}/{LAUNCHER_REDIS_DB}"
    prefix = f"hilum-launcher-{secrets.token_hex(4)}:"  # our own keys: other tests share this Redis
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_")}
    env.update(
        REDIS_URL=url,
        HILUM_BROKER_KEY_PREFIX=prefix,
        HILUM_WORKER_GPUS="0,1",
        HILUM_DATA_DIR=str(tmp_path / "var"),
        HILUM_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilum.cli", "worker"],
        env=env,
        cwd=tmp_path,  # nothing may land in the repository
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        app = make_celery(Settings(_env_file=None, redis_url=url, broker_key_prefix=prefix))
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
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


def celery_master(launcher: subprocess.Popen[bytes]) -> psutil.Process:
    for child in psutil.Process(launcher.pid).children():
        if "celery" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no celery worker under hilum run")


def test_a_killed_worker_is_restarted_while_the_api_keeps_answering(tmp_path: Path) -> None:
    port = free_port()
    proc = start_hilum_run(tmp_path, port)
    try:
        wait_healthy(port, proc)
        assert (tmp_path / "var" / "redis" / "hilum.aof").exists()  # the embedded Redis keeps an append-only file
        old = celery_master(proc)
        doomed = [old, *old.children(recursive=True)]
        for p in doomed:
            p.kill()  # kill -9 of the Celery master (and its pool)
        psutil.wait_procs(doomed, timeout=30)
        answers = []
        deadline = time.monotonic() + 60
        new = None
        while time.monotonic() < deadline:
            answers.append(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code)
            with contextlib.suppress(AssertionError, psutil.Error):
                new = celery_master(proc)
                if new.pid != old.pid:
                    break
            time.sleep(0.3)
        assert new is not None and new.pid != old.pid, "the worker was not restarted"
        assert proc.poll() is None and answers and set(answers) == {200}  # the API never went away
        output = (tmp_path / "run.log").read_text()
        assert "worker exited with code -9; restarting in 1 s" in output and "worker restarted" in output
        proc.send_signal(signal.SIGINT)  # Ctrl-C still stops everything
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            kill_stack(proc)


def test_restart_delay_backs_off_and_is_bounded() -> None:
    from hilum.launcher import restart_delay

    assert [restart_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_child_that_keeps_dying_is_given_up_on(capsys: pytest.CaptureFixture[str]) -> None:
    from hilum.launcher import Child, supervise

    child = Child.spawn("flaky", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    started = time.monotonic()
    assert supervise([child], max_restarts=2, window_s=60) == 3
    assert 3 <= time.monotonic() - started < 30  # restarted after 1 s, then 2 s, then given up
    out = capsys.readouterr().out
    assert out.count("flaky restarted") == 2 and "giving up" in out
