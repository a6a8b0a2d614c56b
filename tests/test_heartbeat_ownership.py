"""A stalled worker whose job or ingestion was taken over does not renew the new owner's lease."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from hilum.db import session_scope
from hilum.jobstate import Heartbeat
from hilum.migrate import upgrade_to_head
from hilum.tables import Dataset, Job, utcnow


def make_row(url: str, table: type[Job] | type[Dataset], *, worker: str) -> str:
    """A running job or an ingesting dataset held by ``worker``, its last heartbeat an hour old."""
    with session_scope(url) as session:
        ds = Dataset(name="d", status="ready" if table is Job else "ingesting", worker=worker)
        ds.heartbeat_at = utcnow() - timedelta(hours=1)
        session.add(ds)
        session.flush()
        if table is Dataset:
            return ds.id
        job = Job(dataset_id=ds.id, status="running", spec={}, model_name="m", worker=worker)
        job.heartbeat_at = utcnow() - timedelta(hours=1)
        session.add(job)
        session.flush()
        return job.id


def heartbeat_of(url: str, table: type[Job] | type[Dataset], row_id: str):  # noqa: ANN201
    with session_scope(url) as session:
        row = session.get(table, row_id)
        assert row is not None
        return row.heartbeat_at


@pytest.mark.parametrize("table", [Job, Dataset], ids=["job", "dataset"])
def test_heartbeat_renews_only_the_lease_it_owns(tmp_path: Path, table: type[Job] | type[Dataset]) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade_to_head(url)
    mine, theirs = make_row(url, table, worker="host:1"), make_row(url, table, worker="host:2")
    before_mine, before_theirs = heartbeat_of(url, table, mine), heartbeat_of(url, table, theirs)
    with (
        Heartbeat(url, mine, every_s=0.05, table=table, worker="host:1"),
        Heartbeat(url, theirs, every_s=0.05, table=table, worker="host:1"),
    ):
        # Wait for three renewals of the owned lease: the other thread has beaten as often by then.
        seen, deadline = {before_mine}, time.monotonic() + 10
        while len(seen) < 4:
            assert time.monotonic() < deadline, "the owner's lease was never renewed"
            seen.add(heartbeat_of(url, table, mine))
            time.sleep(0.02)
    assert heartbeat_of(url, table, theirs) == before_theirs


def test_a_stalled_worker_does_not_record_a_result_for_a_job_taken_over(tmp_path: Path) -> None:
    """The stalled worker finishes training after another worker took the job over: it registers nothing."""
    from hilum.jobstate import record_training_result
    from hilum.storage import Storage
    from hilum.tables import ModelVersion

    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade_to_head(url)
    from tests.service.test_warm_start import artifact_bytes

    job_id = make_row(url, Job, worker="host:2")  # host:1 held it, stalled, and host:2 claimed it since
    stale = tmp_path / "stale-model.pt"  # a real artifact: without the ownership check it would be registered
    artifact_bytes(stale)
    recorded = record_training_result(
        url, Storage(tmp_path / "data"), job_id, worker="host:1", artifact_path=stale, metrics={"val": {}}
    )
    assert recorded is False
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "running" and job.worker == "host:2"
        assert session.query(ModelVersion).count() == 0
