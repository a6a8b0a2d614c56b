"""A job never runs twice: claimers racing for one job or dataset, on SQLite and PostgreSQL.

Eight claimers are released together by a barrier, as threads and as separate processes; the
compare-and-set claims of ``hilum.jobstate`` must hand the work to exactly one of them.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import delete

from hilum.db import get_engine, session_scope
from hilum.jobstate import Claim, claim_dataset, claim_job
from hilum.tables import Dataset, Job, utcnow
from tests.conftest import migrated_database

CLAIMERS = 8
LEASE_S = 60.0


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database(request.param, tmp_path_factory.mktemp("claims")) as url:
        yield url


@pytest.fixture
def url(database: str) -> str:
    with session_scope(database) as s:
        s.execute(delete(Job))
        s.execute(delete(Dataset))
    return database


def add_work(url: str, *, job_status: str, heartbeat_age_s: float | None, attempts: int = 0) -> None:
    """One job and one ingesting dataset, queued or held under a lease of the given age."""
    beat = None if heartbeat_age_s is None else utcnow() - timedelta(seconds=heartbeat_age_s)
    with session_scope(url) as s:
        s.add(Dataset(id="ready", name="r", status="ready"))
        s.add(Dataset(id="d", name="d", status="ingesting", heartbeat_at=beat, attempts=attempts))
        s.add(
            Job(
                id="j",
                dataset_id="ready",
                status=job_status,
                spec={},
                model_name="m",
                heartbeat_at=beat,
                attempts=attempts,
            )
        )


def claim(kind: str, url: str, worker: str) -> str:
    take = claim_job if kind == "job" else claim_dataset
    return take(url, "j" if kind == "job" else "d", worker=worker, lease_s=LEASE_S, max_attempts=5)


def race_threads(claim_one: Callable[[str], str]) -> list[str]:
    barrier = threading.Barrier(CLAIMERS)

    def claimer(i: int) -> str:
        barrier.wait(timeout=30)
        return claim_one(f"thread-{i}")

    with ThreadPoolExecutor(CLAIMERS) as pool:
        return list(pool.map(claimer, range(CLAIMERS)))


def claim_in_process(kind: str, url: str, worker: str, barrier: threading.Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait(timeout=60)
    out.put((worker, claim(kind, url, worker)))


def race_processes(kind: str, url: str) -> list[str]:
    ctx = multiprocessing.get_context("fork")  # cheap on a loaded machine; spawn costs seconds per process
    get_engine(url).dispose()  # no pooled connection may be shared with the children
    barrier, out = ctx.Barrier(CLAIMERS), ctx.Queue()
    procs = [ctx.Process(target=claim_in_process, args=(kind, url, f"proc-{i}", barrier, out)) for i in range(CLAIMERS)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [outcome for _, outcome in results]


def holder(url: str, kind: str) -> tuple[str | None, int]:
    with session_scope(url) as s:
        row = s.get(Job, "j") if kind == "job" else s.get(Dataset, "d")
        assert row is not None
        return row.worker, row.attempts


@pytest.mark.parametrize("kind", ["job", "dataset"])
@pytest.mark.parametrize(
    ("job_status", "heartbeat_age_s"),
    [("queued", None), ("running", 2 * LEASE_S)],  # fresh work, and work whose worker died
    ids=["fresh", "expired-lease"],
)
def test_racing_threads_one_wins(url: str, kind: str, job_status: str, heartbeat_age_s: float | None) -> None:
    add_work(url, job_status=job_status, heartbeat_age_s=heartbeat_age_s)
    outcomes = race_threads(lambda worker: claim(kind, url, worker))
    assert sorted(outcomes) == [Claim.BUSY] * (CLAIMERS - 1) + [Claim.TAKEN], outcomes
    winner, attempts = holder(url, kind)
    assert winner == f"thread-{outcomes.index(Claim.TAKEN)}" and attempts == 1


@pytest.mark.parametrize("kind", ["job", "dataset"])
def test_racing_processes_one_wins(url: str, kind: str) -> None:
    add_work(url, job_status="running", heartbeat_age_s=2 * LEASE_S)
    outcomes = race_processes(kind, url)
    assert sorted(outcomes) == [Claim.BUSY] * (CLAIMERS - 1) + [Claim.TAKEN], outcomes
    winner, attempts = holder(url, kind)
    assert winner is not None and winner.startswith("proc-") and attempts == 1


@pytest.mark.parametrize("kind", ["job", "dataset"])
def test_last_attempt_held_by_a_live_worker_is_not_failed_by_a_duplicate(url: str, kind: str) -> None:
    """A redelivered message for work on its last attempt, still held by a live worker, leaves it alone."""
    add_work(url, job_status="running", heartbeat_age_s=1, attempts=5)
    with session_scope(url) as s:
        for row in (s.get(Job, "j"), s.get(Dataset, "d")):
            assert row is not None
            row.worker = "alive"
    assert claim(kind, url, "duplicate") == Claim.BUSY
    with session_scope(url) as s:
        row = s.get(Job, "j") if kind == "job" else s.get(Dataset, "d")
        assert row is not None
        assert (row.status, row.worker, row.error) == ("running" if kind == "job" else "ingesting", "alive", None)
