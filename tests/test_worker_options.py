"""`hilum worker` options against real processes: HILUM_WORKER_QUEUES and HILUM_WORKER_GPUS=auto.

A worker host started with ``HILUM_WORKER_QUEUES=ingest`` ingests but never takes a training job; one
started with ``gpu`` trains it. ``HILUM_WORKER_GPUS=auto`` on a host without CUDA devices starts one
worker on the CPU (not none, and not one that expects a GPU).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
import torch

from hilum.db import session_scope
from hilum.migrate import upgrade_to_head
from hilum.queue import GPU_QUEUE, INGEST_TASK, TRAIN_TASK, make_celery
from hilum.recovery import message_target
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import Dataset, Job
from pipelines.synthetic import write_zip
from tests.conftest import Stack, delete_broker_keys, make_stack

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def bare(tmp_path: Path, redis_available: None) -> Iterator[Stack]:
    """A migrated database, a data dir and our own broker keys; no API: the test talks to the queue itself."""
    stack, _ = make_stack(tmp_path, "sqlite", redis_db=10)
    upgrade_to_head(stack.database_url)
    Storage(stack.data_dir).ensure()
    try:
        yield stack
    finally:
        stack.stop()
        delete_broker_keys(stack)


def start_worker_host(stack: Stack, name: str, **env: str) -> subprocess.Popen[bytes]:
    """`hilum worker` (the launcher of a worker-only host) with ``env`` added, output to its own log."""
    log = open(stack.logs / f"host-{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilum.cli", "worker"],
        env={**stack.env, **env},
        cwd=stack.logs,  # nothing may land in the repository
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.procs[f"host-{name}"] = proc
    return proc


def stop_worker_host(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the launcher stops its workers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def waiting_training_messages(stack: Stack) -> list[str]:
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    raw = client.lrange(stack.env["HILUM_BROKER_KEY_PREFIX"] + GPU_QUEUE, 0, -1)
    return [target[1] for target in map(message_target, raw) if target and target[0] == TRAIN_TASK]


def status_of(stack: Stack, table: type[Job] | type[Dataset], row_id: str) -> tuple[str, int, str | None]:
    with session_scope(stack.database_url) as session:
        row = session.get(table, row_id)
        assert row is not None
        return row.status, row.attempts, row.worker


def wait_status(stack: Stack, table: type[Job] | type[Dataset], row_id: str, done: set[str]) -> tuple:
    deadline = time.monotonic() + 180
    while (found := status_of(stack, table, row_id))[0] not in done:
        assert time.monotonic() < deadline, f"{table.__name__} {row_id} still {found} after 180 s"
        time.sleep(0.3)
    return found


def test_worker_queues_and_auto_gpus(bare: Stack, tmp_path: Path) -> None:
    stack = bare
    celery = make_celery(
        Settings(
            _env_file=None, redis_url=stack.env["REDIS_URL"], broker_key_prefix=stack.env["HILUM_BROKER_KEY_PREFIX"]
        )
    )
    write_zip(Storage(stack.data_dir).upload_path("ds"), n_per_class=12, size=64, seed=1)
    spec = {"backbone": "test_resnet", "strategy": "full", "epochs": 1, "image_size": 32, "batch_size": 8}
    with session_scope(stack.database_url) as session:
        session.add(Dataset(id="ds", name="d", status="ingesting"))
        session.add(Job(id="job", dataset_id="ds", status="queued", spec=spec, model_name="queues"))
    ingest_host = start_worker_host(stack, "ingest", HILUM_WORKER_QUEUES="ingest", HILUM_WORKER_GPUS="")
    gpu_host = None
    try:
        # The training message first: a worker that also consumed `gpu` would take it before the upload.
        celery.send_task(TRAIN_TASK, args=["job"])
        celery.send_task(INGEST_TASK, args=["ds"])
        assert wait_status(stack, Dataset, "ds", {"ready", "failed"})[0] == "ready"
        assert status_of(stack, Job, "job") == ("queued", 0, None)
        assert "job" in waiting_training_messages(stack)  # still on `gpu`: not taken, not lost

        gpu_host = start_worker_host(stack, "gpu", HILUM_WORKER_QUEUES="gpu", HILUM_WORKER_GPUS="auto")
        status, attempts, worker = wait_status(stack, Job, "job", TERMINAL)
        assert (status, attempts) == ("succeeded", 1), status_of(stack, Job, "job")
        workers = [c for c in psutil.Process(gpu_host.pid).children() if "celery" in " ".join(c.cmdline())]
        assert all("-Q gpu " in " ".join(w.cmdline()) + " " for w in workers)
        assert worker is not None
        if torch.cuda.is_available():  # `auto`: one worker per visible device, pinned to it
            assert len(workers) == torch.cuda.device_count() and worker.startswith("gpu"), worker
            assert sorted(w.environ()["CUDA_VISIBLE_DEVICES"] for w in workers) == sorted(
                str(i) for i in range(torch.cuda.device_count())
            )
        else:  # `auto` without CUDA devices: one CPU worker, named as the launcher names its CPU worker
            assert worker.startswith("hilum@"), worker
            assert len(workers) == 1 and "CUDA_VISIBLE_DEVICES" not in workers[0].environ()
    finally:
        for proc in (ingest_host, gpu_host):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    stop_worker_host(proc)
    assert "started 1 worker process(es): worker" in (stack.logs / "host-gpu.log").read_text()
