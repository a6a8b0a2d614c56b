"""kill -9 of the whole stack (launcher, API, worker, embedded Redis), restart, and the work finishes once.

`hilum run` in its own process group, killed with SIGKILL during an upload's ingestion and during
training, then started again on the same data dir: the dataset becomes ready and the job succeeds,
each exactly once (one dataset folder, one model version, no epoch trained twice). And a running job
whose worker was killed is cancelled at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from pipelines.synthetic import write_zip
from tests.conftest import (
    Stack,
    delete_broker_keys,
    drop_pg_database,
    free_port,
    kill_stack,
    make_stack,
    start_hilum_run,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled"}
FAST = {"HILUM_JOB_LEASE_S": "4", "HILUM_RECOVERY_INTERVAL_S": "1", "HILUM_PROGRESS_INTERVAL_S": "0.2"}
ADMIN = {"Authorization": "Bearer hk_launch"}


def row(db: Path, table: str, row_id: str) -> dict:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id}).mappings().one()
            return dict(found)
    finally:
        engine.dispose()


def wait_row(db: Path, table: str, row_id: str, predicate, timeout: float = 120) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    found: dict = {}
    while time.monotonic() < deadline:
        found = row(db, table, row_id)
        if predicate(found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"{table} {row_id} never reached the expected state: {found}")


def test_kill_9_of_the_whole_stack_during_ingestion_and_training(tmp_path: Path) -> None:
    db = tmp_path / "var" / "hilum.db"
    archive = write_zip(tmp_path / "d.zip", n_per_class=150, size=256, seed=5)
    port = free_port()
    proc = start_hilum_run(tmp_path, port, **FAST)
    try:
        wait_healthy(port, proc)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as client, archive.open("rb") as fh:
            r = client.post("/v1/datasets", files={"file": ("d.zip", fh, "application/zip")})
            assert r.status_code == 202, r.text
            dataset_id = r.json()["id"]
        # kill -9 everything while a worker holds the ingestion
        wait_row(db, "datasets", dataset_id, lambda d: d["worker"] is not None)
        kill_stack(proc)
        assert row(db, "datasets", dataset_id)["status"] == "ingesting"

        port = free_port()
        proc = start_hilum_run(tmp_path, port, **FAST)
        wait_healthy(port, proc)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as client:
            ready = wait_for(client, f"/v1/datasets/{dataset_id}", {"ready", "failed"}, timeout=240)
            assert ready["status"] == "ready" and ready["image_count"] == 300, ready
            assert row(db, "datasets", dataset_id)["attempts"] == 2
            datasets = sorted(p.name for p in (tmp_path / "var" / "datasets").iterdir())
            assert datasets == [dataset_id]  # one version, no half-written leftovers
            assert not (tmp_path / "var" / "uploads" / f"{dataset_id}.zip").exists()

            spec = {"dataset_id": dataset_id, "backbone": "test_resnet", "strategy": "full", "epochs": 3}
            r = client.post("/v1/jobs", json=spec | {"image_size": 64, "batch_size": 16, "model_name": "crash"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
        # kill -9 everything once an epoch is checkpointed
        wait_row(db, "jobs", job_id, lambda j: json.loads(j["progress"] or "{}").get("epochs_done", 0) >= 1, 240)
        kill_stack(proc)
        assert row(db, "jobs", job_id)["status"] == "running"

        port = free_port()
        proc = start_hilum_run(tmp_path, port, **FAST)
        wait_healthy(port, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=60) as client:
            done = wait_for(client, f"/v1/jobs/{job_id}", TERMINAL, timeout=300)
            assert done["status"] == "succeeded" and done["attempts"] == 2, done
            assert [v["version"] for v in client.get("/v1/models/crash").json()["versions"]] == [1]
        report = json.loads((tmp_path / "var" / "jobs" / job_id / "report" / "report.json").read_text())
        epochs, pids = [e["epoch"] for e in report["history"]], [e["pid"] for e in report["history"]]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2, epochs  # no epoch trained twice
        assert pids[0] != pids[-1]  # the first epoch before the kill, the last after the restart
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            kill_stack(proc)


@pytest.fixture
def no_worker_stack(tmp_path: Path, redis_available: None):  # type: ignore[no-untyped-def]
    stack, pg_name = make_stack(tmp_path, "sqlite", redis_db=14)
    stack.env.update(HILUM_JOB_LEASE_S="3", HILUM_RECOVERY_INTERVAL_S="1")
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()
        delete_broker_keys(stack)
        if pg_name:
            drop_pg_database(pg_name)


def test_cancel_of_a_job_whose_worker_was_killed_is_immediate(no_worker_stack: Stack, tmp_path: Path) -> None:
    stack = no_worker_stack
    archive = write_zip(tmp_path / "c.zip", n_per_class=24, size=64, seed=2)
    worker = stack.start_worker("doomed")
    with stack.client() as client, archive.open("rb") as fh:
        r = client.post("/v1/datasets", files={"file": ("c.zip", fh, "application/zip")})
        dataset = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["status"] == "ready", dataset
        spec = {"dataset_id": dataset["id"], "backbone": "test_resnet", "strategy": "full", "epochs": 200}
        job = client.post("/v1/jobs", json=spec | {"image_size": 32, "batch_size": 8, "model_name": "orphan"}).json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies; no worker is left to stop the job
        worker.wait(timeout=30)
        deadline = time.monotonic() + 30  # once its lease (3 s) has expired, cancel ends it at once
        while True:
            r = client.post(f"/v1/jobs/{job['id']}/cancel")
            assert r.status_code == 200, r.text
            if r.json()["status"] == "cancelled":
                break
            assert time.monotonic() < deadline, f"cancel never ended the orphaned job: {r.json()}"
            time.sleep(0.5)
        assert r.json()["finished_at"] is not None
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
