"""Sweeps: validate the grid like jobs, trim it to the budget, store a sweep and one ordinary job per config."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hilum import sweeps as core
from hilum.jobstate import TERMINAL, cancel_unheld
from hilum.queue import TRAIN_TASK
from hilum.storage import Storage
from hilum.tables import Job, Sweep, new_id, utcnow
from pipelines.train import TrainSpec
from service.domain.jobs import _check_request
from service.errors import Conflict, Invalid, NotFound, Unavailable
from service.schemas.jobs import JobCreate, RecipeFields
from service.schemas.sweeps import SweepCreate, SweepMember, SweepPublic

log = logging.getLogger(__name__)

# What every member shares: the job fields a sweep takes, and its training recipe (where null means "off").
SHARED_FIELDS = {"epochs", "batch_size", "seed", "target_sensitivity", "lr"}
RECIPE_FIELDS = set(RecipeFields.model_fields)


def create_sweep(
    session: Session,
    celery: Celery,
    storage: Storage,
    request: SweepCreate,
    *,
    created_by: str,
    idempotency_key: str | None,
) -> Sweep:
    """Validate every config as a job, store the sweep and its member jobs, queue them. Same key, same sweep."""
    if idempotency_key:
        existing = session.scalar(select(Sweep).where(Sweep.idempotency_key == idempotency_key))
        if existing is not None:
            return existing
    budget = request.budget
    run, skipped = core.plan_grid(
        request.backbones,
        request.strategies,
        request.image_sizes,
        epochs=request.epochs,
        max_jobs=budget.max_jobs,
        max_total_epochs=budget.max_total_epochs,
    )
    if not run:
        raise Invalid(
            f"the budget allows no member: budget.max_total_epochs {budget.max_total_epochs} is less than "
            f"epochs {request.epochs}; raise the budget or lower epochs"
        )
    shared = request.model_dump(include=SHARED_FIELDS, exclude_none=True) | request.model_dump(include=RECIPE_FIELDS)
    for config in run + skipped:  # a bad config is refused even when the budget would have left it out
        _check_request(session, _as_job(request, config))
    now = utcnow()
    sweep = Sweep(
        id=new_id(),
        dataset_id=request.dataset_id,
        model_name=request.model_name,
        status=core.OPEN,
        request=request.model_dump(mode="json"),
        skipped=[c.as_dict() for c in skipped],
        deadline_at=now + timedelta(minutes=budget.max_minutes) if budget.max_minutes else None,
        idempotency_key=idempotency_key,
        created_by=created_by,
        created_at=now,
    )
    jobs = [
        Job(
            id=new_id(),
            dataset_id=request.dataset_id,
            status="queued",
            spec=TrainSpec(**shared, **config.as_dict()).to_dict(),
            weights=request.weights,
            model_name=request.model_name,
            created_by=created_by,
            sweep_id=sweep.id,
        )
        for config in run
    ]
    sweep.members = [j.id for j in jobs]
    session.add(sweep)
    session.flush()  # the sweep row before its members' foreign keys
    session.add_all(jobs)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same idempotency key won
        session.rollback()
        existing = session.scalar(select(Sweep).where(Sweep.idempotency_key == idempotency_key))
        if existing is None:
            raise
        return existing
    _enqueue(session, celery, storage, sweep, jobs)
    return sweep


def _as_job(request: SweepCreate, config: core.Config) -> JobCreate:
    return JobCreate(
        dataset_id=request.dataset_id,
        model_name=request.model_name,
        weights=request.weights,
        **request.model_dump(include=SHARED_FIELDS | RECIPE_FIELDS),
        **config.as_dict(),
    )


def _enqueue(session: Session, celery: Celery, storage: Storage, sweep: Sweep, jobs: list[Job]) -> None:
    """Send each member's message; if the queue fails, the unsent members fail (the sent ones still run)."""
    for i, job in enumerate(jobs):
        try:
            celery.send_task(TRAIN_TASK, args=[job.id])
        except Exception as exc:
            log.exception("could not enqueue member %s of sweep %s", job.id, sweep.id)
            for unsent in jobs[i:]:
                unsent.status, unsent.error, unsent.finished_at = (
                    "failed",
                    "the training queue is unavailable",
                    utcnow(),
                )
            session.commit()
            core.finalise_sweep(session, storage, sweep.id)
            raise Unavailable("the training queue is unavailable; try again later") from exc


def get_sweep(session: Session, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"sweep '{sweep_id}' not found")
    return sweep


def list_sweeps(session: Session, *, dataset_id: str | None, limit: int) -> list[Sweep]:
    query = select(Sweep).order_by(Sweep.created_at.desc()).limit(limit)
    if dataset_id:
        query = query.where(Sweep.dataset_id == dataset_id)
    return list(session.scalars(query))


def cancel_sweep(session: Session, storage: Storage, sweep_id: str, *, lease_s: float) -> Sweep:
    """Cancel every member not yet ended (at once if no worker holds it, else at its next step); the sweep
    ends ``cancelled`` with no version once they all have."""
    sweep = get_sweep(session, sweep_id)
    if sweep.status != core.OPEN:
        raise Conflict(f"sweep '{sweep_id}' has already {sweep.status}")
    sweep.cancel_requested = True
    for job in core.members(session, sweep):
        if job.status not in TERMINAL and not cancel_unheld(session, job.id, lease_s=lease_s):
            job.cancel_requested = True
    session.commit()
    core.finalise_sweep(session, storage, sweep_id)
    session.expire_all()
    return get_sweep(session, sweep_id)


def public_status(sweep: Sweep, jobs: list[Job]) -> str:
    """A stored end state, else running once any member has left the queue."""
    if sweep.status != core.OPEN:
        return sweep.status if sweep.status in TERMINAL else "running"
    return "running" if any(j.status != "queued" for j in jobs) else "queued"


def to_public(session: Session, storage: Storage, sweep: Sweep) -> SweepPublic:
    jobs = core.members(session, sweep)
    rows = sweep.results if sweep.results is not None else [core.member_row(j, storage) for j in jobs]
    return SweepPublic(
        id=sweep.id,
        dataset_id=sweep.dataset_id,
        model_name=sweep.model_name,
        status=public_status(sweep, jobs),  # type: ignore[arg-type]
        members=[SweepMember(**row, best=row["job_id"] == sweep.best_job_id) for row in rows],
        skipped=sweep.skipped,  # type: ignore[arg-type]
        best_job_id=sweep.best_job_id,
        model_version=sweep.model_version,
        error=sweep.error,
        cancel_requested=sweep.cancel_requested,
        request=sweep.request,
        created_at=sweep.created_at,
        deadline_at=sweep.deadline_at,
        finished_at=sweep.finished_at,
    )
