"""Sweeps: a grid of ordinary training jobs whose best succeeded member becomes one model version.

Shared by the API (planning, cancel), the worker (a member reaching a terminal state) and the reconciler
(overdue members, sweeps left unfinalised). A member job registers no version itself; when every member is
terminal, ``finalise_sweep`` picks the best by validation AUROC (ties: lower validation loss, then grid
order) and registers it. Finalising is a compare-and-set on the sweep's status inside the registering
transaction, so two workers finishing the last members at once register exactly one version.

Budget: the grid is enumerated in request order (backbones, then strategies, then image sizes, as
``itertools.product``) and its configs are kept in that order while they fit ``max_jobs`` and
``max_total_epochs``; the rest are recorded as skipped. ``max_minutes`` counts from the sweep's creation:
members not started by then are cancelled (at claim time and by the reconciler); running ones finish.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from hilum.db import session_scope
from hilum.jobstate import TERMINAL
from hilum.registry import register_version
from hilum.storage import Storage
from hilum.tables import Job, Sweep, utcnow

log = logging.getLogger(__name__)

OPEN = "open"  # members queued or running; the public status says which
OVERDUE_ERROR = "the sweep's max_minutes ran out before this member started"
_REGISTER_TRIES = 3  # a version number taken by a concurrent registration of the same model: try again


@dataclass(frozen=True)
class Config:
    """One point of the grid."""

    backbone: str
    strategy: str
    image_size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_grid(
    backbones: Sequence[str],
    strategies: Sequence[str],
    image_sizes: Sequence[int],
    *,
    epochs: int,
    max_jobs: int,
    max_total_epochs: int | None,
) -> tuple[list[Config], list[Config]]:
    """(configs to run, configs skipped by the budget), both in grid order; duplicates count once."""
    grid = [
        Config(b, s, n) for b, s, n in itertools.product(_unique(backbones), _unique(strategies), _unique(image_sizes))
    ]
    allowed = max_jobs if max_total_epochs is None else min(max_jobs, max_total_epochs // epochs)
    return grid[:allowed], grid[allowed:]


def _unique(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


# --------------------------------------------------------------------------- the members table


def member_row(job: Job, storage: Storage) -> dict[str, Any]:
    """One line of a sweep's table: config, status, validation AUROC (with CI) and loss, time, best epoch."""
    metrics = job.metrics or {}
    val = metrics.get("val") or {}
    seconds = None
    if job.started_at is not None and job.finished_at is not None:
        seconds = round((_utc(job.finished_at) - _utc(job.started_at)).total_seconds(), 1)
    return {
        "job_id": job.id,
        "config": Config(job.spec["backbone"], job.spec["strategy"], int(job.spec["image_size"])).as_dict(),
        "status": job.status,
        "val_auroc": val.get("auroc"),
        "val_auroc_ci95": val.get("auroc_ci95"),
        "val_loss": best_val_loss(storage, job) if job.status == "succeeded" else val.get("loss"),
        "seconds": seconds,
        "best_epoch": metrics.get("best_epoch"),
        "error": job.error,
    }


def best_val_loss(storage: Storage, job: Job) -> float | None:
    """The validation loss of the kept epoch, from the job's report (the final metrics are calibrated ones)."""
    path = storage.job_dir(job.id) / "report" / "report.json"
    try:
        report = json.loads(path.read_text())
        loss = report["history"][int(report["best_epoch"]) - 1]["val"]["loss"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return None if loss is None else float(loss)


def choose_best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The succeeded row with the highest validation AUROC; ties go to the lower validation loss, then to the
    earlier config (rows are in grid order). A missing AUROC or loss ranks last. None: nothing succeeded."""

    def rank(row: dict[str, Any]) -> tuple[bool, float, bool, float]:
        auroc, loss = row["val_auroc"], row["val_loss"]
        return (auroc is None, -(auroc or 0.0), loss is None, loss or 0.0)

    succeeded = [r for r in rows if r["status"] == "succeeded"]
    return min(succeeded, key=rank) if succeeded else None  # min keeps the first of equal ranks


def failure_reason(rows: list[dict[str, Any]]) -> str:
    """Why a sweep ended without a version, in one sentence."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("failed", "cancelled")}
    first = next((r for r in rows if r["error"]), None)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    reason = f"no member succeeded ({summary or 'no members'})"
    if first is not None:
        reason += f"; first error ({first['config']['backbone']}, {first['config']['strategy']}, "
        reason += f"{first['config']['image_size']} px): {first['error']}"
    return reason


# --------------------------------------------------------------------------- finalising


def members(session: Session, sweep: Sweep) -> list[Job]:
    """The sweep's jobs in grid order."""
    jobs = {j.id: j for j in session.scalars(select(Job).where(Job.sweep_id == sweep.id))}
    return [jobs[i] for i in sweep.members if i in jobs]


def finalise_sweep(session: Session, storage: Storage, sweep_id: str) -> str | None:
    """If every member of an open sweep is terminal, end it (registering its best member); commits.

    Returns the status this call gave the sweep, or None when there was nothing to do (members still
    running, or another process finalised it first).
    """
    for attempt in range(_REGISTER_TRIES):
        try:
            return _finalise_once(session, storage, sweep_id)
        except IntegrityError:
            session.rollback()
            if attempt == _REGISTER_TRIES - 1:
                return _fail(session, sweep_id, "registering the best member kept colliding with other versions")
        except SQLAlchemyError:  # the database briefly away: the next member's end or recovery pass tries again
            session.rollback()
            raise
        except Exception as exc:  # the sweep must end even when its best artifact cannot be registered
            session.rollback()
            log.exception("sweep %s: finalising failed", sweep_id)
            return _fail(session, sweep_id, f"registering the best member failed: {type(exc).__name__}: {exc}")
    return None


def _finalise_once(session: Session, storage: Storage, sweep_id: str) -> str | None:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.status != OPEN:
        return None
    jobs = members(session, sweep)
    if any(j.status not in TERMINAL for j in jobs):
        return None
    # The compare-and-set: on PostgreSQL a concurrent finaliser blocks on the row lock, then finds the
    # status changed; SQLite serialises writers. Both see rowcount 0 and leave.
    won = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == OPEN)
        .values(status="finalising")
        .execution_options(synchronize_session=False)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    rows = [member_row(j, storage) for j in jobs]
    best = choose_best(rows)
    values: dict[str, Any] = {"results": rows, "finished_at": utcnow()}
    if sweep.cancel_requested:
        values.update(status="cancelled", error="cancelled on request: no version registered")
    elif best is None:
        values.update(status="failed", error=failure_reason(rows))
    else:
        job = next(j for j in jobs if j.id == best["job_id"])
        version = _register(session, storage, job)
        values.update(status="succeeded", best_job_id=job.id, model_version=version)
    session.execute(update(Sweep).where(Sweep.id == sweep_id).values(**values))
    session.commit()
    log.info("sweep %s: %s", sweep_id, values["status"])
    return str(values["status"])


def artifact_path(storage: Storage, job_id: str) -> Path:
    """Where a member's training wrote its artifact (pipelines/train.py: ``out_dir/model.pt``)."""
    return storage.job_dir(job_id) / "model.pt"


def _register(session: Session, storage: Storage, job: Job) -> int:
    from models.artifact import ClassifierArtifact  # torch: only where a version is registered

    path = artifact_path(storage, job.id)
    artifact = ClassifierArtifact.load(path)
    row = register_version(
        session,
        storage,
        job,
        artifact=path,
        backbone=str(job.spec["backbone"]),
        class_names=list(artifact.class_names),
        threshold=artifact.threshold,
        metrics=dict(job.metrics or {}),
    )
    return int(row.version)


def _fail(session: Session, sweep_id: str, reason: str) -> str | None:
    done = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == OPEN)
        .values(status="failed", error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return "failed" if done.rowcount == 1 else None  # type: ignore[attr-defined]


def finish_member(url: str, storage: Storage, job_id: str) -> str | None:
    """Called when a job reaches a terminal state: finalise its sweep if it was the last member."""
    with session_scope(url) as session:
        sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
        if sweep_id is None:
            return None
        return finalise_sweep(session, storage, sweep_id)


# --------------------------------------------------------------------------- the time budget


def cancel_if_overdue(url: str, storage: Storage, job_id: str) -> bool:
    """At claim time: cancel a queued member whose sweep's time is up (and finalise the sweep if it was last)."""
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        if job is None or job.sweep_id is None or job.status != "queued":
            return False
        sweep = session.get(Sweep, job.sweep_id)
        if sweep is None or not overdue(sweep, utcnow()):
            return False
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="cancelled", cancel_requested=True, error=OVERDUE_ERROR, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
    finish_member(url, storage, job_id)
    return True


def overdue(sweep: Sweep, now: datetime) -> bool:
    return sweep.deadline_at is not None and _utc(sweep.deadline_at) <= now


def reconcile_sweeps(session: Session, storage: Storage, *, now: datetime) -> list[str]:
    """Cancel unstarted members of overdue sweeps, then finalise every open sweep whose members are all
    terminal. Returns the ids of the sweeps finalised."""
    open_sweeps = list(session.scalars(select(Sweep).where(Sweep.status == OPEN)))
    for sweep in open_sweeps:
        if overdue(sweep, now):
            session.execute(
                update(Job)
                .where(Job.sweep_id == sweep.id, Job.status == "queued")
                .values(status="cancelled", cancel_requested=True, error=OVERDUE_ERROR, finished_at=now)
                .execution_options(synchronize_session=False)
            )
    session.commit()
    return [s.id for s in open_sweeps if finalise_sweep(session, storage, s.id) is not None]


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
