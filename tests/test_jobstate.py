"""Job claiming: one worker wins, leases expire, attempts are bounded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hilum.db import session_scope
from hilum.jobstate import Claim, claim_job
from hilum.migrate import upgrade_to_head
from hilum.tables import Dataset, Job, utcnow


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade_to_head(url)
    with session_scope(url) as s:
        s.add(Dataset(id="d", name="d", status="ready"))
        s.add(Job(id="j", dataset_id="d", status="queued", spec={}, model_name="m"))
    return url


def test_only_one_worker_claims_a_queued_job(url: str) -> None:
    assert claim_job(url, "j", worker="a", lease_s=60, max_attempts=3) == Claim.TAKEN
    assert claim_job(url, "j", worker="b", lease_s=60, max_attempts=3) == Claim.BUSY


def test_an_expired_lease_is_taken_over(url: str) -> None:
    assert claim_job(url, "j", worker="a", lease_s=60, max_attempts=3) == Claim.TAKEN
    with session_scope(url) as s:
        s.get(Job, "j").heartbeat_at = utcnow() - timedelta(seconds=120)
    assert claim_job(url, "j", worker="b", lease_s=60, max_attempts=3) == Claim.TAKEN
    with session_scope(url) as s:
        job = s.get(Job, "j")
        assert job.attempts == 2 and job.worker == "b"


def test_attempts_are_bounded(url: str) -> None:
    for _ in range(2):
        assert claim_job(url, "j", worker="a", lease_s=0, max_attempts=2) == Claim.TAKEN
    assert claim_job(url, "j", worker="a", lease_s=0, max_attempts=2) == Claim.DONE
    with session_scope(url) as s:
        job = s.get(Job, "j")
        assert job.status == "failed" and "gave up after 2 attempts" in job.error


def test_finished_and_cancelled_jobs_are_not_claimed(url: str) -> None:
    with session_scope(url) as s:
        s.get(Job, "j").cancel_requested = True
    assert claim_job(url, "j", worker="a", lease_s=60, max_attempts=3) == Claim.DONE
    with session_scope(url) as s:
        assert s.get(Job, "j").status == "cancelled"
    assert claim_job(url, "j", worker="a", lease_s=60, max_attempts=3) == Claim.DONE


def test_out_of_memory_names_the_batch_size() -> None:
    import torch

    from pipelines.train import TrainSpec
    from worker.training import describe_failure

    spec = TrainSpec(backbone="resnet50", strategy="full", epochs=1, image_size=224, batch_size=64)
    message = describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory"), spec)
    assert "batch_size=64" in message and "smaller batch_size" in message


def test_one_worker_claims_an_ingesting_dataset_and_a_dead_ones_lease_expires(tmp_path: Path) -> None:
    from hilum.jobstate import claim_dataset

    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade_to_head(url)
    with session_scope(url) as s:
        s.add(Dataset(id="d", name="d", status="ingesting"))
    assert claim_dataset(url, "d", worker="a", lease_s=60, max_attempts=3) == Claim.TAKEN
    assert claim_dataset(url, "d", worker="b", lease_s=60, max_attempts=3) == Claim.BUSY
    with session_scope(url) as s:
        s.get(Dataset, "d").heartbeat_at = utcnow() - timedelta(seconds=120)  # worker a died
    assert claim_dataset(url, "d", worker="b", lease_s=60, max_attempts=3) == Claim.TAKEN
    with session_scope(url) as s:
        d = s.get(Dataset, "d")
        assert (d.worker, d.attempts) == ("b", 2)
        d.heartbeat_at = utcnow() - timedelta(seconds=120)
    assert claim_dataset(url, "d", worker="c", lease_s=60, max_attempts=2) == Claim.DONE
    with session_scope(url) as s:
        d = s.get(Dataset, "d")
        assert d.status == "failed" and "gave up after 2 attempts" in d.error
    assert claim_dataset(url, "d", worker="c", lease_s=60, max_attempts=9) == Claim.DONE  # finished: never redone


@pytest.mark.parametrize(
    ("status", "heartbeat_age_s", "cancelled_at_once"),
    [("queued", None, True), ("running", 120, True), ("running", None, True), ("running", 5, False)],
)
def test_cancel_is_immediate_when_no_live_worker_holds_the_job(
    url: str, status: str, heartbeat_age_s: float | None, cancelled_at_once: bool
) -> None:
    from hilum.jobstate import cancel_unheld

    with session_scope(url) as s:
        job = s.get(Job, "j")
        job.status = status
        job.heartbeat_at = None if heartbeat_age_s is None else utcnow() - timedelta(seconds=heartbeat_age_s)
    with session_scope(url) as s:
        assert cancel_unheld(s, "j", lease_s=60) is cancelled_at_once
    with session_scope(url) as s:
        job = s.get(Job, "j")
        assert (job.status == "cancelled") is cancelled_at_once
    # a worker that later gets the message finds nothing to run
    if cancelled_at_once:
        assert claim_job(url, "j", worker="late", lease_s=60, max_attempts=3) == Claim.DONE
