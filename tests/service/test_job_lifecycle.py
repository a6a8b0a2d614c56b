"""Jobs that survive: cancellation, a worker killed mid-job, several workers, live events.

Real Redis, real `celery worker` processes, real HTTP. A dedicated stack with a short lease and
visibility timeout, so a dead worker's job is picked up in seconds rather than an hour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from pipelines.synthetic import write_zip
from tests.conftest import Stack, delete_broker_keys, drop_pg_database, make_stack, wait_for

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def durable(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[Stack]:
    stack, pg_name = make_stack(tmp_path_factory.mktemp(f"durable-{request.param}"), request.param, redis_db=14)
    stack.env.update(HILUM_JOB_LEASE_S="8", HILUM_BROKER_VISIBILITY_TIMEOUT_S="10", HILUM_BROKER_RESTORE_INTERVAL_S="2")
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()
        delete_broker_keys(stack)
        if pg_name:
            drop_pg_database(pg_name)


@pytest.fixture(scope="module")
def dataset_id(durable: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_zip(tmp_path_factory.mktemp("d") / "d.zip", n_per_class=48, size=96, seed=3)
    worker = durable.start_worker("ingest", queues="ingest")
    try:
        with durable.client() as client, path.open("rb") as fh:
            r = client.post("/v1/datasets", files={"file": ("d.zip", fh, "application/zip")})
            assert r.status_code == 202, r.text
            return wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready"}, timeout=120)["id"]
    finally:
        stop(worker)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def submit(client: httpx.Client, dataset_id: str, **overrides: object) -> dict:
    body = {
        "dataset_id": dataset_id,
        "backbone": "test_resnet",
        "strategy": "full",
        "epochs": 2,
        "image_size": 64,
        "batch_size": 8,
        "model_name": "durable",
    } | overrides
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def wait_until(client: httpx.Client, job_id: str, predicate, timeout: float = 120) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        assert job["status"] not in TERMINAL, job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached the expected state: {job}")


def wait_log(stack: Stack, worker: str, text: str, timeout: float = 60) -> None:
    """Wait for ``text`` in a worker's log: proof the worker got this far."""
    log = stack.logs / f"worker-{worker}.log"
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not in the log of worker {worker} after {timeout} s"
        time.sleep(0.2)


def completed_epochs(job: dict) -> int:
    """Epochs finished and checkpointed so far."""
    return int((job.get("progress") or {}).get("epochs_done", 0))


def test_cancel_queued_and_running_jobs(durable: Stack, dataset_id: str) -> None:
    worker = durable.start_worker("c1")
    try:
        with durable.client() as client:
            running = submit(client, dataset_id, epochs=60)
            queued = submit(client, dataset_id, epochs=1)
            wait_until(client, running["id"], lambda j: completed_epochs(j) >= 1)
            r = client.post(f"/v1/jobs/{queued['id']}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            r = client.post(f"/v1/jobs/{running['id']}/cancel")
            assert r.status_code == 200 and r.json()["cancel_requested"]
            done = wait_for(client, f"/v1/jobs/{running['id']}", TERMINAL, timeout=60)
            assert done["status"] == "cancelled"
            assert completed_epochs(done) < 60
            assert (durable.data_dir / "jobs" / running["id"] / "checkpoints" / "last.pt").exists()
            # the queued job never starts, even once the worker is free: it takes the message and ends it
            wait_log(durable, "c1", f"job {queued['id']}: done")
            never = client.get(f"/v1/jobs/{queued['id']}").json()
            assert never["status"] == "cancelled" and never["started_at"] is None and never["attempts"] == 0
            assert client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 409
    finally:
        stop(worker)


def test_killed_worker_job_resumes_from_checkpoint(durable: Stack, dataset_id: str) -> None:
    first = durable.start_worker("k1")
    second = None
    try:
        with durable.client() as client:
            job = submit(client, dataset_id, epochs=3, image_size=96)
            wait_until(client, job["id"], lambda j: completed_epochs(j) == 1, timeout=180)
            stop(first, signal.SIGKILL)  # the whole worker: main process and its child
            second = durable.start_worker("k2")
            done = wait_for(client, f"/v1/jobs/{job['id']}", TERMINAL, timeout=240)
            assert done["status"] == "succeeded", done
            assert done["attempts"] == 2
        report = json.loads((durable.data_dir / "jobs" / job["id"] / "report" / "report.json").read_text())
        trained_by = [e["pid"] for e in report["history"]]
        assert len(trained_by) == 3
        # epoch 1 was trained by the killed worker and not again; epochs 2 and 3 by the new one
        assert trained_by[0] != trained_by[1] == trained_by[2]
    finally:
        if first.poll() is None:
            stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)


def test_two_workers_four_jobs_each_runs_once(durable: Stack, dataset_id: str) -> None:
    workers = [durable.start_worker("m1"), durable.start_worker("m2")]
    try:
        durable.wait_worker_ready("m1")
        durable.wait_worker_ready("m2")
        with durable.client() as client:
            jobs = [submit(client, dataset_id, epochs=1, model_name="many", seed=i) for i in range(4)]
            finished = [wait_for(client, f"/v1/jobs/{j['id']}", TERMINAL, timeout=240) for j in jobs]
            summary = [(j["status"], j["attempts"], j["worker"]) for j in finished]
            assert [j["status"] for j in finished] == ["succeeded"] * 4, summary
            assert all(j["attempts"] == 1 for j in finished), summary
            assert {j["worker"].split("@")[0] for j in finished} == {"m1", "m2"}, summary
            versions = client.get("/v1/models/many").json()["versions"]
            assert sorted(v["version"] for v in versions) == [1, 2, 3, 4]
            assert sorted(v["job_id"] for v in versions) == sorted(j["id"] for j in jobs)
    finally:
        for w in workers:
            stop(w)


def test_events_stream_reaches_the_client(durable: Stack, dataset_id: str) -> None:
    worker = durable.start_worker("e1")
    try:
        with durable.client() as client:
            job = submit(client, dataset_id, epochs=2, image_size=96)
            events = []
            with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=120) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                name = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == "job":
                        events.append(json.loads(line[6:]))
                    elif line.startswith("data: ") and name == "end":
                        break
            statuses = [e["status"] for e in events]
            assert statuses[-1] == "succeeded"
            assert "running" in statuses
            done = [completed_epochs(e) for e in events]
            assert done == sorted(done) and done[-1] == 2  # progress only moves forward
            assert any(
                e["status"] == "running" and (e["progress"].get("val") or {}).get("auroc") is not None for e in events
            ), "no epoch-end metrics reached the client while running"
    finally:
        stop(worker)


def test_idempotency_key_returns_the_same_job(durable: Stack, dataset_id: str) -> None:
    with durable.client() as client:
        body = {
            "dataset_id": dataset_id,
            "backbone": "test_resnet",
            "strategy": "frozen",
            "epochs": 1,
            "image_size": 64,
        }
        first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-123"})
        again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-123"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        listed = client.get("/v1/jobs", params={"dataset_id": dataset_id, "status": "queued"}).json()
        assert [j["id"] for j in listed].count(first.json()["id"]) == 1
        client.post(f"/v1/jobs/{first.json()['id']}/cancel")


def test_api_restart_and_redelivery_neither_lose_nor_repeat_jobs(durable: Stack, dataset_id: str) -> None:
    worker = durable.start_worker("r1")
    try:
        with durable.client() as client:
            job = submit(client, dataset_id, epochs=2, model_name="restart")
            wait_until(client, job["id"], lambda j: j["status"] == "running")
            before = client.get("/v1/jobs").json()
        api = durable.procs.pop("api")  # the API goes away mid-job and comes back
        api.terminate()
        api.wait(timeout=30)
        durable.start_api()
        with durable.client() as client:
            assert [j["id"] for j in client.get("/v1/jobs").json()] == [j["id"] for j in before]
            done = wait_for(client, f"/v1/jobs/{job['id']}", TERMINAL, timeout=180)
            assert done["status"] == "succeeded" and done["attempts"] == 1
            # the same message delivered again (as after a lost ack) must not train or register again
            from hilum.queue import make_celery
            from hilum.settings import Settings

            broker = make_celery(
                Settings(
                    _env_file=None,
                    redis_url=durable.env["REDIS_URL"],
                    broker_key_prefix=durable.env["HILUM_BROKER_KEY_PREFIX"],
                )
            )
            broker.send_task("hilum.train", args=[job["id"]])
            wait_log(durable, "r1", f"job {job['id']}: done")  # the worker took the duplicate and ended it
            again = client.get(f"/v1/jobs/{job['id']}").json()
            assert again["attempts"] == 1 and again["finished_at"] == done["finished_at"]
            assert [v["version"] for v in client.get("/v1/models/restart").json()["versions"]] == [1]
    finally:
        stop(worker)


def test_a_job_held_by_a_live_worker_is_set_aside_then_failed_after_max_attempts(
    durable: Stack, dataset_id: str
) -> None:
    """Claim.BUSY: the worker neither runs the job nor drops its message; it looks again after a lease.

    Another worker (here this test) holds the job's lease and renews it; then it dies. The retried message
    finds the lease expired and the job out of attempts (HILUM_JOB_MAX_ATTEMPTS=1): it ends failed, saying so.
    """
    from hilum.jobstate import Claim, Heartbeat, claim_job

    lease_s = float(durable.env["HILUM_JOB_LEASE_S"])
    with durable.client() as client:
        job = submit(client, dataset_id, epochs=1, model_name="held")
        holder = "other@elsewhere:1"
        claimed = claim_job(durable.database_url, job["id"], worker=holder, lease_s=lease_s, max_attempts=3)
        assert claimed == Claim.TAKEN
        worker_env, durable.env = durable.env, {**durable.env, "HILUM_JOB_MAX_ATTEMPTS": "1"}
        try:
            with Heartbeat(durable.database_url, job["id"], every_s=0.5, worker=holder):
                worker = durable.start_worker("b1")
                wait_log(durable, "b1", f"job {job['id']}: busy", timeout=120)
                wait_log(durable, "b1", "retry: Retry in")  # its message goes back, due after one lease
                held = client.get(f"/v1/jobs/{job['id']}").json()
                assert (held["status"], held["worker"], held["attempts"]) == ("running", holder, 1), held
            # the holder stops renewing (it died): the retried message finds the job out of attempts
            done = wait_for(client, f"/v1/jobs/{job['id']}", TERMINAL, timeout=120)
        finally:
            durable.env = worker_env
            stop(worker)
    assert (done["status"], done["attempts"], done["worker"]) == ("failed", 1, holder), done
    assert done["error"] == "gave up after 1 attempts; last error: worker lost", done
    assert not (durable.data_dir / "jobs" / job["id"] / "checkpoints").exists()  # never trained here
