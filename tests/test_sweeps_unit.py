"""Sweeps without a stack: the grid and its budget, the choice of the best member, and finalisation
(once, even when finalisers race) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from hilum.db import session_scope
from hilum.migrate import upgrade_to_head
from hilum.queue import make_celery
from hilum.recovery import reconcile
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.sweeps import (
    OPEN,
    OVERDUE_ERROR,
    Config,
    cancel_if_overdue,
    choose_best,
    failure_reason,
    finish_member,
    plan_grid,
    reconcile_sweeps,
)
from hilum.tables import Dataset, Job, ModelVersion, Sweep, utcnow
from tests.artifacts import tiny_artifact
from tests.conftest import REDIS_HOST, migrated_database

# --------------------------------------------------------------------------- the grid and its budget


def test_grid_is_enumerated_in_request_order_without_duplicates() -> None:
    run, skipped = plan_grid(
        ["resnet18", "efficientnet_b0", "resnet18"], ["frozen", "gradual"], [128, 224], epochs=6, max_jobs=64,
        max_total_epochs=None,
    )  # fmt: skip
    assert skipped == []
    assert run[:3] == [Config("resnet18", "frozen", 128), Config("resnet18", "frozen", 224),
                       Config("resnet18", "gradual", 128)]  # fmt: skip
    assert len(run) == 8 and len(set(run)) == 8
    assert run[-1] == Config("efficientnet_b0", "gradual", 224)


@pytest.mark.parametrize(
    ("max_jobs", "max_total_epochs", "kept"),
    [
        (8, None, 8),
        (3, None, 3),
        (8, 48, 8),
        (8, 47, 7),  # 47 // 6: the epochs budget binds
        (2, 48, 2),  # max_jobs binds
        (8, 5, 0),  # less than one member's epochs
    ],
)
def test_budget_keeps_the_first_configs_that_fit(max_jobs: int, max_total_epochs: int | None, kept: int) -> None:
    grid = (["resnet18", "efficientnet_b0"], ["frozen", "gradual"], [128, 224])
    full, _ = plan_grid(*grid, epochs=6, max_jobs=64, max_total_epochs=None)
    run, skipped = plan_grid(*grid, epochs=6, max_jobs=max_jobs, max_total_epochs=max_total_epochs)
    assert run == full[:kept] and skipped == full[kept:]


# --------------------------------------------------------------------------- the best member


def row(job_id: str, status: str = "succeeded", auroc: float | None = 0.9, loss: float | None = 0.3) -> dict:
    return {
        "job_id": job_id,
        "config": {"backbone": "resnet18", "strategy": "full", "image_size": 128},
        "status": status,
        "val_auroc": auroc,
        "val_loss": loss,
        "error": None if status == "succeeded" else f"{job_id} went wrong",
    }


def test_best_member_is_the_highest_auroc_among_the_succeeded() -> None:
    rows = [row("a", auroc=0.91), row("b", auroc=0.95), row("c", status="failed", auroc=0.99), row("d", auroc=None)]
    assert choose_best(rows)["job_id"] == "b"  # type: ignore[index]


def test_an_auroc_tie_goes_to_the_lower_loss_then_to_grid_order() -> None:
    assert choose_best([row("a", loss=0.4), row("b", loss=0.2), row("c", loss=0.3)])["job_id"] == "b"  # type: ignore[index]
    assert choose_best([row("a", loss=0.2), row("b", loss=0.2)])["job_id"] == "a"  # type: ignore[index]
    assert choose_best([row("a", loss=None), row("b", loss=0.5)])["job_id"] == "b"  # type: ignore[index]
    assert choose_best([row("a", auroc=None, loss=0.1), row("b", auroc=0.6, loss=0.9)])["job_id"] == "b"  # type: ignore[index]


def test_nothing_succeeded_means_no_best_and_a_reason() -> None:
    rows = [row("a", status="failed"), row("b", status="cancelled")]
    assert choose_best(rows) is None
    reason = failure_reason(rows)
    assert "no member succeeded (1 failed, 1 cancelled)" in reason and "a went wrong" in reason


# --------------------------------------------------------------------------- finalisation, on both databases


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with migrated_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "data").ensure()


def trained(storage: Storage, job_id: str, *, val_loss: float) -> None:
    """What a succeeded member leaves in its job folder: the artifact and the report."""
    out = storage.job_dir(job_id)
    (out / "report").mkdir(parents=True)
    tiny_artifact(out / "model.pt", threshold=0.4, seed=None)
    history = [{"val": {"loss": 0.69}}, {"val": {"loss": val_loss}}]
    (out / "report" / "report.json").write_text(json.dumps({"best_epoch": 2, "history": history}))


def add_sweep(url: str, storage: Storage, members: list[dict[str, Any]], **sweep: Any) -> str:
    """A sweep whose members have the given status, val AUROC and loss (succeeded ones with an artifact)."""
    with session_scope(url) as s:
        if s.get(Dataset, "d") is None:
            s.add(Dataset(id="d", name="d", status="ready", classes=["NORMAL", "PNEUMONIA"]))
            s.flush()
        row = Sweep(dataset_id="d", model_name="m", status=OPEN, request={}, **sweep)
        s.add(row)
        s.flush()
        ids = []
        for i, m in enumerate(members):
            job = Job(
                dataset_id="d",
                status=m["status"],
                spec={"backbone": "test_resnet", "strategy": "full", "image_size": 32 + i},
                model_name="m",
                sweep_id=row.id,
                metrics={"val": {"auroc": m.get("auroc"), "auroc_ci95": [0.5, 1.0]}, "best_epoch": 2},
                error=m.get("error"),
            )
            s.add(job)
            s.flush()
            ids.append(job.id)
            if m["status"] == "succeeded":
                trained(storage, job.id, val_loss=m.get("loss", 0.3))
        row.members = ids
        return row.id


def sweep_of(url: str, sweep_id: str) -> Sweep:
    with session_scope(url) as s:
        sweep = s.get(Sweep, sweep_id)
        assert sweep is not None
        s.expunge(sweep)
        return sweep


def versions(url: str) -> list[ModelVersion]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(ModelVersion)))
        s.expunge_all()
        return rows


def test_the_best_member_is_registered_when_the_last_one_ends(url: str, storage: Storage) -> None:
    sweep_id = add_sweep(
        url,
        storage,
        [
            {"status": "succeeded", "auroc": 0.9, "loss": 0.2},
            {"status": "succeeded", "auroc": 0.9, "loss": 0.1},  # the tie goes to the lower loss
            {"status": "running"},
        ],
    )
    jobs = sweep_of(url, sweep_id).members
    assert finish_member(url, storage, jobs[0]) is None  # a member still runs
    assert sweep_of(url, sweep_id).status == OPEN and versions(url) == []
    with session_scope(url) as s:
        job = s.get(Job, jobs[2])
        assert job is not None
        job.status, job.error = "failed", "RuntimeError: boom"
    assert finish_member(url, storage, jobs[2]) == "succeeded"
    sweep = sweep_of(url, sweep_id)
    assert sweep.best_job_id == jobs[1] and sweep.model_version == 1 and sweep.finished_at is not None
    assert [(r["status"], r["val_loss"]) for r in sweep.results or []] == [
        ("succeeded", 0.2),
        ("succeeded", 0.1),
        ("failed", None),
    ]
    [version] = versions(url)
    assert version.job_id == jobs[1] and version.model_name == "m" and version.threshold == 0.4
    assert finish_member(url, storage, jobs[0]) is None  # already finalised: nothing more


def test_all_members_failed_fails_the_sweep_with_a_reason(url: str, storage: Storage) -> None:
    sweep_id = add_sweep(url, storage, [{"status": "failed", "error": "ValueError: bad"}, {"status": "cancelled"}])
    assert finish_member(url, storage, sweep_of(url, sweep_id).members[0]) == "failed"
    sweep = sweep_of(url, sweep_id)
    assert sweep.error is not None and "no member succeeded (1 failed, 1 cancelled)" in sweep.error
    assert "ValueError: bad" in sweep.error and versions(url) == []


def test_a_cancelled_sweep_registers_nothing(url: str, storage: Storage) -> None:
    sweep_id = add_sweep(url, storage, [{"status": "succeeded", "auroc": 0.8}], cancel_requested=True)
    assert finish_member(url, storage, sweep_of(url, sweep_id).members[0]) == "cancelled"
    assert versions(url) == []


def test_a_best_member_that_cannot_be_registered_fails_the_sweep(url: str, storage: Storage) -> None:
    sweep_id = add_sweep(url, storage, [{"status": "succeeded", "auroc": 0.8}])
    [member] = sweep_of(url, sweep_id).members
    (storage.job_dir(member) / "model.pt").unlink()
    assert finish_member(url, storage, member) == "failed"
    sweep = sweep_of(url, sweep_id)
    assert sweep.error is not None and sweep.error.startswith("registering the best member failed")
    assert versions(url) == []


def test_concurrent_finalisers_register_exactly_one_version(url: str, storage: Storage) -> None:
    sweep_id = add_sweep(url, storage, [{"status": "succeeded", "auroc": 0.7}, {"status": "succeeded", "auroc": 0.8}])
    members = sweep_of(url, sweep_id).members
    racers = 6
    barrier = threading.Barrier(racers)

    def finalise(i: int) -> str | None:
        barrier.wait(timeout=30)
        return finish_member(url, storage, members[i % 2])

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(finalise, range(racers)))
    assert outcomes.count("succeeded") == 1 and outcomes.count(None) == racers - 1
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1
        assert s.scalar(select(ModelVersion.job_id)) == members[1]


def test_unstarted_members_of_an_overdue_sweep_are_cancelled(url: str, storage: Storage) -> None:
    past = utcnow() - timedelta(minutes=1)
    sweep_id = add_sweep(url, storage, [{"status": "succeeded", "auroc": 0.8}, {"status": "queued"}], deadline_at=past)
    members = sweep_of(url, sweep_id).members
    assert cancel_if_overdue(url, storage, members[0]) is False  # not queued: left alone
    assert cancel_if_overdue(url, storage, members[1]) is True  # at claim time
    with session_scope(url) as s:
        job = s.get(Job, members[1])
        assert job is not None and job.status == "cancelled" and job.error == OVERDUE_ERROR
    sweep = sweep_of(url, sweep_id)
    assert sweep.status == "succeeded" and sweep.best_job_id == members[0]  # it was the last member

    # The reconciler does the same for a sweep no worker looks at, and finalises it.
    other = add_sweep(url, storage, [{"status": "queued"}, {"status": "queued"}], deadline_at=past)
    current = add_sweep(url, storage, [{"status": "queued"}], deadline_at=utcnow() + timedelta(hours=1))
    with session_scope(url) as s:
        assert reconcile_sweeps(s, storage, now=utcnow()) == [other]
    assert sweep_of(url, other).status == "failed" and sweep_of(url, current).status == OPEN


def test_the_recovery_pass_cancels_overdue_members_instead_of_requeueing_them(
    tmp_path: Path, storage: Storage, redis_available: None
) -> None:
    prefix = f"hilum-sweeps-{secrets.token_hex(4)}:"
    settings = Settings(
        _env_file=None,
        data_dir=storage.root,
        database_url=f"sqlite:///{tmp_path / 'recovery.db'}",
        redis_url=f"{REDIS_HOST}/13",
        broker_key_prefix=prefix,
        job_lease_s=30,
    )
    url = settings.resolved_database_url
    upgrade_to_head(url)
    sweep_id = add_sweep(url, storage, [{"status": "queued"}], deadline_at=utcnow() - timedelta(seconds=1))
    try:
        outcome = reconcile(settings, make_celery(settings), grace_s=0)
    finally:
        client = redis.Redis.from_url(settings.redis_url or "")
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    assert outcome.sweeps == [sweep_id] and outcome.jobs == []
    sweep = sweep_of(url, sweep_id)
    assert sweep.status == "failed" and sweep.error is not None and OVERDUE_ERROR in sweep.error
