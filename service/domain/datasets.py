"""Dataset versions: accept an upload, queue its ingestion, read it back."""

from __future__ import annotations

import logging
from pathlib import Path

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.configs import ingest_config
from hilum.queue import INGEST_TASK
from hilum.settings import Settings
from hilum.tables import Dataset
from pipelines.archive import ArchiveRejected
from pipelines.ingest import DatasetRejected, inspect_upload
from service.errors import Invalid, NotFound, Unavailable

log = logging.getLogger(__name__)


def accept_upload(
    session: Session,
    celery: Celery,
    settings: Settings,
    *,
    dataset_id: str,
    upload: Path,
    filename: str | None,
    size: int,
    name: str | None,
    created_by: str,
) -> Dataset:
    """Check the archive's structure (cheap), record the dataset and queue its ingestion.

    A structurally bad archive is refused here (4xx) and its upload removed.
    """
    try:
        summary = inspect_upload(upload, ingest_config(settings))
    except (ArchiveRejected, DatasetRejected) as exc:
        upload.unlink(missing_ok=True)
        raise Invalid(str(exc)) from exc
    dataset = Dataset(
        id=dataset_id,
        name=name or Path(filename or "dataset").stem or "dataset",
        status="ingesting",
        upload_filename=filename,
        upload_bytes=size,
        layout=summary.layout,
        classes=list(summary.classes),
        created_by=created_by,
    )
    session.add(dataset)
    session.commit()  # the row exists before the worker can look for it
    try:
        celery.send_task(INGEST_TASK, args=[dataset_id])
    except Exception as exc:
        log.exception("could not enqueue ingestion of %s", dataset_id)
        dataset.status, dataset.error = "failed", "the ingestion queue is unavailable; upload again later"
        session.commit()
        raise Unavailable("the ingestion queue is unavailable; try again later") from exc
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset '{dataset_id}' not found")
    return dataset


def list_datasets(session: Session, *, status: str | None = None) -> list[Dataset]:
    query = select(Dataset).order_by(Dataset.created_at.desc())
    if status:
        query = query.where(Dataset.status == status)
    return list(session.scalars(query))
