"""Dataset versions: accept an upload, queue its ingestion, read it back."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.configs import ingest_config
from hilum.queue import INGEST_TASK
from hilum.settings import Settings
from hilum.tables import Dataset
from pipelines.archive import ArchiveRejected
from pipelines.dataset import load_rejections
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
    classes: str | None = None,
) -> Dataset:
    """Check the archive's structure (cheap), record the dataset and queue its ingestion.

    A structurally bad archive, or one whose labels break the declared ``classes`` (comma-separated),
    is refused here (4xx) and its upload removed.
    """
    config = ingest_config(settings)
    if classes is not None:
        declared = tuple(c.strip() for c in classes.split(",") if c.strip())
        if len(declared) < 2:
            upload.unlink(missing_ok=True)
            raise Invalid(f"form field 'classes' must name at least two classes, comma-separated (got {classes!r})")
        config = replace(config, declared_classes=declared)
    try:
        summary = inspect_upload(upload, config)
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


def get_rejections(
    session: Session, dataset_dir: Path, dataset_id: str, *, offset: int, limit: int
) -> tuple[int, list[dict[str, str]]]:
    """(total, page) of a dataset's rejected files: from its rejections file, else from its report."""
    dataset = get_dataset(session, dataset_id)
    try:
        return load_rejections(dataset_dir, offset=offset, limit=limit)
    except FileNotFoundError:  # not ingested (yet), or ingested before the file existed
        rejected = list((dataset.report or {}).get("rejected", []))
        return len(rejected), rejected[offset : offset + limit]
