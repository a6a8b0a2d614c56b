"""A stalled worker whose job was taken over neither renews the new owner's lease nor records its result."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from hilum.db import session_scope
from hilum.jobstate import Heartbeat
from hilum.migrate import upgrade_to_head
from hilum.tables import Dataset, Job, utcnow


def make_job(url: str, *, worker: str) -> str:
    with session_scope(url) as session:
        ds = Dataset(name="d", status="ready")
        session.add(ds)
        session.flush()
        job = Job(dataset_id=ds.id, status="running", spec={}, model_name="m", worker=worker)
        job.heartbeat_at = utcnow() - timedelta(hours=1)
        session.add(job)
        session.flush()
        return job.id


def heartbeat_of(url: str, job_id: str):  # noqa: ANN201
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.heartbeat_at


def test_heartbeat_renews_only_the_lease_it_owns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade_to_head(url)
    mine, theirs = make_job(url, worker="host:1"), make_job(url, worker="host:2")
    before_mine, before_theirs = heartbeat_of(url, mine), heartbeat_of(url, theirs)
    with Heartbeat(url, mine, every_s=0.05, worker="host:1"), Heartbeat(url, theirs, every_s=0.05, worker="host:1"):
        # Wait for three renewals of the owned lease: the other thread has beaten as often by then.
        seen, deadline = {before_mine}, time.monotonic() + 10
        while len(seen) < 4:
            assert time.monotonic() < deadline, "the owner's lease was never renewed"
            seen.add(heartbeat_of(url, mine))
            time.sleep(0.02)
    assert heartbeat_of(url, theirs) == before_theirs
