"""Training jobs: commit the job row, then enqueue its id on the gpu queue."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hilum.jobstate import TERMINAL, cancel_unheld
from hilum.queue import TRAIN_TASK
from hilum.storage import Storage
from hilum.tables import Dataset, Job, ModelVersion, WeightsFile, utcnow
from models.backbones import KNOWN_BACKBONES
from pipelines.train import TrainSpec
from pipelines.training.warm_start import match_classes
from service.errors import Conflict, Invalid, NotFound, Unavailable
from service.schemas.jobs import JobCreate, JobPublic, RecipeFields

log = logging.getLogger(__name__)
RECIPE_FIELDS = set(RecipeFields.model_fields)


def create_job(
    session: Session, celery: Celery, request: JobCreate, *, created_by: str, idempotency_key: str | None
) -> Job:
    """Validate the request against stored state, store the job, queue it. Same key, same job."""
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            return existing
    backbone, init_from = _check_request(session, request)
    fields: dict[str, Any] = request.model_dump(
        include={
            "strategy",
            "epochs",
            "image_size",
            "batch_size",
            "seed",
            "target_sensitivity",
            "sensitivity_confidence",
            "lr",
        },
        exclude_none=True,
    )
    # The recipe fields go as they are: null is meaningful there (no EMA, no early stopping).
    fields.update(request.model_dump(include=RECIPE_FIELDS))
    spec = TrainSpec(backbone=backbone, **fields)
    job = Job(
        dataset_id=request.dataset_id,
        status="queued",
        spec=spec.to_dict(),
        weights=f"init:{init_from['model']}/v{init_from['version']}" if init_from else request.weights,
        init_from=init_from,
        model_name=request.model_name,
        idempotency_key=idempotency_key,
        created_by=created_by,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same idempotency key won
        session.rollback()
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        return existing
    try:
        celery.send_task(TRAIN_TASK, args=[job.id])
    except Exception as exc:
        log.exception("could not enqueue job %s", job.id)
        job.status, job.error, job.finished_at = "failed", "the training queue is unavailable", utcnow()
        session.commit()
        raise Unavailable("the training queue is unavailable; try again later") from exc
    return job


def _check_request(session: Session, request: JobCreate) -> tuple[str, dict[str, Any] | None]:
    """(backbone, the job's init_from record) once the request fits stored state."""
    if request.init_from is not None and request.weights != "none":
        raise Invalid(
            f"give one source of initial weights: weights '{request.weights}' or init_from "
            f"{request.init_from.model} v{request.init_from.version}, not both"
        )
    if request.backbone is None and request.init_from is None:
        raise Invalid("backbone is required (e.g. 'resnet18') unless init_from names a registered model version")
    if request.backbone is not None and request.backbone not in KNOWN_BACKBONES:
        raise Invalid(f"unknown backbone '{request.backbone}'; known backbones: {', '.join(KNOWN_BACKBONES)}")
    dataset = session.get(Dataset, request.dataset_id)
    if dataset is None:
        raise NotFound(f"dataset '{request.dataset_id}' not found")
    if dataset.status != "ready":
        raise Conflict(f"dataset '{dataset.id}' is {dataset.status}, not ready for training")
    check_model_classes(session, request.model_name, list(dataset.classes or []), source=f"dataset '{dataset.id}'")
    if request.init_from is not None:
        return _check_init_from(session, request, dataset)
    assert request.backbone is not None
    if request.weights not in ("none", "imagenet"):
        weights = session.get(WeightsFile, request.weights)
        if weights is None:
            raise NotFound(f"weights '{request.weights}' are not registered")
        if weights.backbone != request.backbone:
            raise Invalid(f"weights '{request.weights}' are for {weights.backbone}, not for {request.backbone}")
    return request.backbone, None


def _check_init_from(session: Session, request: JobCreate, dataset: Dataset) -> tuple[str, dict[str, Any]]:
    """The warm start's version exists, has the requested backbone, and its classes map onto the dataset's."""
    assert request.init_from is not None
    init = request.init_from
    source = session.scalar(
        select(ModelVersion).where(ModelVersion.model_name == init.model, ModelVersion.version == init.version)
    )
    if source is None:
        raise NotFound(f"init_from: model '{init.model}' has no version {init.version}")
    if request.backbone is not None and request.backbone != source.backbone:
        raise Invalid(
            f"backbone '{request.backbone}' differs from the backbone of init_from {init.model} v{init.version} "
            f"('{source.backbone}'): omit backbone, or give '{source.backbone}'"
        )
    try:
        match_classes(list(source.class_names), list(dataset.classes or []), init.class_map)
    except ValueError as exc:
        raise Invalid(f"init_from {init.model} v{init.version}: {exc}") from exc
    return source.backbone, {"model": init.model, "version": init.version, "class_map": init.class_map}


def check_model_classes(session: Session, model_name: str, class_names: list[str], *, source: str) -> None:
    """A model name keeps one class list: a new version has the classes of the earlier ones."""
    earlier = session.scalar(
        select(ModelVersion.class_names)
        .where(ModelVersion.model_name == model_name)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    classes = sorted(class_names)
    if earlier is not None and sorted(earlier) != classes:
        raise Conflict(
            f"model '{model_name}' has classes {', '.join(sorted(earlier))}; {source} has "
            f"{', '.join(classes)}: use another model_name, or the same classes"
        )


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job '{job_id}' not found")
    return job


def list_jobs(session: Session, *, status: str | None, dataset_id: str | None, limit: int) -> list[Job]:
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    if dataset_id:
        query = query.where(Job.dataset_id == dataset_id)
    return list(session.scalars(query))


def cancel_job(session: Session, job_id: str, *, lease_s: float) -> Job:
    """A job no worker holds (queued, or running under an expired lease) is cancelled at once;
    one a live worker runs stops at its next step boundary."""
    job = get_job(session, job_id)
    if job.status in TERMINAL:
        raise Conflict(f"job '{job_id}' has already {job.status}")
    if not cancel_unheld(session, job_id, lease_s=lease_s):
        job.cancel_requested = True
    session.commit()
    session.refresh(job)
    return job


def to_public(session: Session, job: Job) -> JobPublic:
    public = JobPublic.model_validate(job)
    if job.status == "succeeded":
        public.model_version = session.scalar(select(ModelVersion.version).where(ModelVersion.job_id == job.id))
    return public


def job_snapshot(url: str, job_id: str) -> dict | None:
    """The JSON-able public view of a job, read in a fresh session (for streaming)."""
    from hilum.db import session_scope

    with session_scope(url) as session:
        job = session.get(Job, job_id)
        return None if job is None else to_public(session, job).model_dump(mode="json")


async def job_events(url: str, job_id: str, *, poll_s: float = 0.5, keepalive_s: float = 15.0):  # type: ignore[no-untyped-def]
    """Server-sent events: one ``job`` event per change, until the job ends."""
    import asyncio
    import json
    import time

    from fastapi.concurrency import run_in_threadpool

    last: str | None = None
    last_sent = time.monotonic()
    while True:
        snapshot = await run_in_threadpool(job_snapshot, url, job_id)
        if snapshot is None:
            return
        payload = json.dumps(snapshot, separators=(",", ":"))
        if payload != last:
            last, last_sent = payload, time.monotonic()
            yield f"event: job\ndata: {payload}\n\n"
        elif time.monotonic() - last_sent > keepalive_s:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if snapshot["status"] in TERMINAL:
            yield "event: end\ndata: {}\n\n"
            return
        await asyncio.sleep(poll_s)


def report_dir(storage: Storage, job_id: str) -> Path:
    return storage.job_dir(job_id) / "report"


def read_report(storage: Storage, job: Job) -> dict:
    path = report_dir(storage, job.id) / "report.json"
    if not path.exists():
        raise NotFound(f"job '{job.id}' has no report yet (it is {job.status})")
    return json.loads(path.read_text())


def report_images(storage: Storage, job_id: str) -> list[str]:
    return sorted(p.name for p in report_dir(storage, job_id).glob("*.png"))


def report_image_path(storage: Storage, job_id: str, image: str) -> Path:
    if image not in report_images(storage, job_id):  # only names we wrote: no path tricks
        raise NotFound(f"job '{job_id}' has no report image '{image}'")
    return report_dir(storage, job_id) / image
