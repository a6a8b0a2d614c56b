"""Job state transitions, written to the database (the only place job state lives)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hilum.db import session_scope
from hilum.storage import Storage
from hilum.tables import Dataset, Job, utcnow

_log = logging.getLogger(__name__)

REGISTER_TRIES = 5  # concurrent registrations of one model: a version number collision is tried again

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def finish_job(url: str, job_id: str, status: str, *, error: str | None = None) -> None:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in TERMINAL:
            return
        job.status = status
        job.error = error
        job.finished_at = utcnow()


class JobProgress:
    """Progress sink and cancellation probe for one running job, throttled to spare the database."""

    def __init__(self, url: str, job_id: str, *, interval_s: float = 1.0) -> None:
        self.url = url
        self.job_id = job_id
        self.interval_s = interval_s
        self._last_write = 0.0
        self._last_poll = 0.0
        self._cancelled = False
        self._latest_val: dict[str, Any] | None = None
        self._written_val: dict[str, Any] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        if event.get("val"):
            self._latest_val = event["val"]
        else:  # mid-epoch events keep showing the latest validation metrics
            event = {**event, "val": self._latest_val}
        # Epoch ends (they carry validation metrics) and phase changes are always written.
        milestone = event.get("phase") != "training" or event.get("val") is not self._written_val
        if not milestone and now - self._last_write < self.interval_s:
            return
        self._last_write, self._written_val = now, event.get("val")
        with session_scope(self.url) as session:
            values: dict[str, Any] = {"progress": event}
            if "val" in event and event["val"]:
                values["metrics"] = {"val": event["val"]}
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))

    def should_stop(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_poll < self.interval_s:
            return False
        self._last_poll = now
        with session_scope(self.url) as session:
            job = session.get(Job, self.job_id)
            self._cancelled = bool(job is None or job.cancel_requested)
        return self._cancelled


class Claim:
    """Outcome of trying to take a job for this worker."""

    TAKEN = "taken"  # this worker runs it now
    BUSY = "busy"  # another live worker holds its lease: look again later
    DONE = "done"  # finished, cancelled, unknown or out of attempts: nothing to run


def lease_cutoff(now: datetime, lease_s: float) -> datetime:
    """Heartbeats before this instant belong to a worker presumed dead."""
    return datetime.fromtimestamp(now.timestamp() - lease_s, tz=UTC)


def claim_job(url: str, job_id: str, *, worker: str, lease_s: float, max_attempts: int) -> str:
    """Take ``job_id`` if it is queued, or running under an expired lease (its worker died).

    A compare-and-set UPDATE, so two workers given the same redelivered message can't both win.
    """
    now = utcnow()
    cutoff = lease_cutoff(now, lease_s)
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in TERMINAL:
            return Claim.DONE
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", now
            return Claim.DONE
        claimable = or_(
            Job.status == "queued",
            and_(Job.status == "running", or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)),
        )
        if job.attempts >= max_attempts:  # only once no live worker holds it: its last attempt may be running
            error = f"gave up after {max_attempts} attempts; last error: {job.error or 'worker lost'}"
            gave_up = session.execute(
                update(Job)
                .where(Job.id == job_id, claimable)
                .values(status="failed", finished_at=now, error=error)
                .execution_options(synchronize_session=False)
            )
            return Claim.DONE if gave_up.rowcount == 1 else Claim.BUSY  # type: ignore[attr-defined]
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                status="running",
                worker=worker,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                started_at=func.coalesce(Job.started_at, now),
            )
            .execution_options(synchronize_session=False)
        )
        return Claim.TAKEN if result.rowcount == 1 else Claim.BUSY  # type: ignore[attr-defined]


def claim_dataset(url: str, dataset_id: str, *, worker: str, lease_s: float, max_attempts: int) -> str:
    """Take the ingestion of ``dataset_id`` if it is ingesting with no live owner (compare-and-set, as jobs)."""
    now = utcnow()
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.status != "ingesting":
            return Claim.DONE
        unheld = (
            Dataset.id == dataset_id,
            Dataset.status == "ingesting",
            or_(Dataset.heartbeat_at.is_(None), Dataset.heartbeat_at < lease_cutoff(now, lease_s)),
        )
        if dataset.attempts >= max_attempts:  # only once no live worker holds it, as for jobs
            gave_up = session.execute(
                update(Dataset)
                .where(*unheld)
                .values(
                    status="failed", error=f"ingestion gave up after {max_attempts} attempts (its worker kept dying)"
                )
                .execution_options(synchronize_session=False)
            )
            return Claim.DONE if gave_up.rowcount == 1 else Claim.BUSY  # type: ignore[attr-defined]
        result = session.execute(
            update(Dataset)
            .where(*unheld)
            .values(worker=worker, heartbeat_at=now, attempts=Dataset.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return Claim.TAKEN if result.rowcount == 1 else Claim.BUSY  # type: ignore[attr-defined]


def cancel_unheld(session: Session, job_id: str, *, lease_s: float) -> bool:
    """Cancel ``job_id`` at once if no worker holds it: queued, or running under an expired lease.

    A compare-and-set UPDATE (a worker claiming it at the same moment either wins or sees it cancelled).
    The caller commits. False: a live worker holds it (or it has ended).
    """
    now = utcnow()
    unheld = or_(
        Job.status == "queued",
        and_(
            Job.status == "running",
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < lease_cutoff(now, lease_s)),
        ),
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, unheld)
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


class Heartbeat:
    """Renews a lease (a running job's, or an ingesting dataset's) from a background thread."""

    def __init__(
        self,
        url: str,
        row_id: str,
        *,
        every_s: float,
        table: type[Job] | type[Dataset] = Job,
        worker: str | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, row_id, every_s, table, worker), daemon=True)

    def _run(self, url: str, row_id: str, every_s: float, table: type[Job] | type[Dataset], worker: str | None) -> None:
        live = "running" if table is Job else "ingesting"
        owned = [table.id == row_id, table.status == live]
        if worker is not None:  # a stalled worker whose lease was taken over must not renew the new owner's lease
            owned.append(table.worker == worker)
        while not self._stop.wait(every_s):
            with session_scope(url) as session:
                session.execute(update(table).where(*owned).values(heartbeat_at=utcnow()))

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def record_training_result(
    url: str,
    storage: Storage,
    job_id: str,
    *,
    worker: str,
    artifact_path: Path,
    metrics: dict[str, Any],
) -> bool:
    """Register the trained artifact as a model version and mark the job succeeded, if the job is still ours.

    A job cancelled meanwhile, or taken over by another worker while this one stalled, records nothing
    (returns False): its result is not this worker's to record. Two jobs of one model finishing together
    pick the same version number; the loser's transaction fails on the key and is tried again.
    """
    for attempt in range(1, REGISTER_TRIES + 1):
        try:
            return _record_once(url, storage, job_id, worker=worker, artifact_path=artifact_path, metrics=metrics)
        except IntegrityError:
            if attempt == REGISTER_TRIES:
                raise
            _log.info("job %s: its version number was taken by a concurrent registration; trying again", job_id)
    raise AssertionError("unreachable")


def _record_once(
    url: str, storage: Storage, job_id: str, *, worker: str, artifact_path: Path, metrics: dict[str, Any]
) -> bool:
    from hilum.registry import register_version
    from models.artifact import ClassifierArtifact

    with session_scope(url) as session:
        job = session.get(Job, job_id, with_for_update=True)  # a row lock on PostgreSQL; SQLite serialises writes
        if job is None:
            return False
        if job.status != "running" or job.worker != worker or job.cancel_requested:
            _log.warning(
                "job %s: not registering (status %s, held by %s, cancel requested %s)",
                job_id,
                job.status,
                job.worker,
                job.cancel_requested,
            )
            if job.status == "running" and job.worker == worker:
                job.status, job.finished_at = "cancelled", utcnow()
            return False
        artifact = ClassifierArtifact.load(artifact_path)
        if job.sweep_id is None:  # a sweep member registers nothing: its sweep registers the best (hilum/sweeps.py)
            register_version(
                session,
                storage,
                job,
                artifact=artifact_path,
                backbone=artifact.backbone,
                class_names=list(artifact.class_names),
                threshold=artifact.threshold,
                metrics=metrics,
            )
        job.metrics = metrics
        job.status, job.finished_at = "succeeded", utcnow()
    return True
