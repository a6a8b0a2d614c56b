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
