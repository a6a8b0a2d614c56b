"""Celery tasks: thin wrappers that pass ids to the runners."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task, signals

from hilum.jobstate import Claim, finish_job
from hilum.queue import INGEST_TASK, TRAIN_TASK
from hilum.recovery import reconcile_safely
from hilum.settings import get_settings
from worker.celery_app import app
from worker.ingestion import run_ingestion
from worker.training import run_training_job

log = logging.getLogger(__name__)


@app.task(name=INGEST_TASK, bind=True, max_retries=None)
def ingest_dataset(self: Task, dataset_id: str) -> None:
    settings = get_settings()
    if run_ingestion(settings, dataset_id, worker=self.request.hostname or "") == Claim.BUSY:
        raise self.retry(countdown=settings.job_lease_s)  # another live worker ingests it: look again later


@app.task(name=TRAIN_TASK, bind=True, max_retries=None)
def train_job(self: Task, job_id: str) -> None:
    settings = get_settings()
    try:
        outcome = run_training_job(settings, job_id, worker=self.request.hostname or "")
    except Exception as exc:  # never leave a job 'running' with no message left to finish it
        finish_job(settings.resolved_database_url, job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if outcome == Claim.BUSY:
        # Another live worker holds this job (a redelivered message): look again after one lease.
        raise self.retry(countdown=settings.job_lease_s)


@signals.worker_ready.connect
def _recover_at_start(**_: Any) -> None:
    """A worker that starts re-queues lost work once (the API also does so periodically)."""
    threading.Thread(target=reconcile_safely, args=(get_settings(), app), daemon=True, name="recovery").start()
