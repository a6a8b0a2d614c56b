"""Jobs of one model finishing together each get their own version number and keep their own artifact."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from hilum.db import session_scope
from hilum.jobstate import record_training_result
from hilum.storage import Storage
from hilum.tables import Dataset, Job, ModelVersion
from models.artifact import ClassifierArtifact
from tests.artifacts import tiny_artifact
from tests.conftest import migrated_database

FINISHERS = 6


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with migrated_database(request.param, tmp_path) as url:
        yield url


def test_concurrent_finishers_get_distinct_versions_and_keep_their_artifacts(url: str, tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data").ensure()
    with session_scope(url) as session:
        ds = Dataset(name="d", status="ready")
        session.add(ds)
        session.flush()
        jobs = [
            Job(dataset_id=ds.id, status="running", spec={}, model_name="m", worker=f"w{i}") for i in range(FINISHERS)
        ]
        session.add_all(jobs)
        session.flush()
        job_ids = [j.id for j in jobs]
    # Each job's artifact says which job made it (its threshold).
    artifacts = [tiny_artifact(tmp_path / f"a{i}.pt", threshold=i / 10, seed=None) for i in range(FINISHERS)]
    barrier, results, errors = threading.Barrier(FINISHERS), {}, []

    def finish(i: int) -> None:
        barrier.wait()
        try:
            results[i] = record_training_result(
                url, storage, job_ids[i], worker=f"w{i}", artifact_path=artifacts[i], metrics={"val": {}}
            )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(FINISHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and results == dict.fromkeys(range(FINISHERS), True)
    with session_scope(url) as session:
        rows = session.scalars(select(ModelVersion).where(ModelVersion.model_name == "m")).all()
        assert sorted(r.version for r in rows) == list(range(1, FINISHERS + 1))
        for row in rows:
            i = job_ids.index(row.job_id)
            assert ClassifierArtifact.load(storage.resolve(row.artifact_path)).threshold == pytest.approx(i / 10)
        assert {j.status for j in session.scalars(select(Job))} == {"succeeded"}
