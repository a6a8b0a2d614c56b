"""Ingest an uploaded archive into an immutable dataset version and record the outcome."""

from __future__ import annotations

import json
import logging

from hilum.configs import ingest_config
from hilum.db import session_scope
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import Dataset
from pipelines.archive import ArchiveRejected
from pipelines.imaging import ImageRejected
from pipelines.ingest import DatasetRejected, ingest_archive

log = logging.getLogger(__name__)


def run_ingestion(settings: Settings, dataset_id: str) -> None:
    """Decode and normalise the upload of ``dataset_id``; idempotent (a ready dataset is left alone)."""
    url = settings.resolved_database_url
    storage = Storage(settings.data_dir)
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.status != "ingesting":
            log.info("dataset %s: nothing to ingest", dataset_id)
            return
    out_dir = storage.dataset_dir(dataset_id)
    if out_dir.exists():  # a previous attempt finished writing but died before recording it
        report = json.loads((out_dir / "report.json").read_text())
    else:
        try:
            report = ingest_archive(storage.upload_path(dataset_id), out_dir, ingest_config(settings)).to_dict()
        except (ArchiveRejected, DatasetRejected, ImageRejected) as exc:
            _record_failure(url, dataset_id, str(exc))
            return
        except Exception as exc:
            log.exception("dataset %s: ingestion crashed", dataset_id)
            _record_failure(url, dataset_id, f"ingestion failed: {type(exc).__name__}: {exc}")
            return
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        dataset.status = "ready"
        dataset.report = report
        dataset.classes = list(report["classes"])
        dataset.class_counts = dict(report["class_counts"])
        dataset.image_count = int(report["accepted"])
    log.info("dataset %s: ready, %d images", dataset_id, report["accepted"])


def _record_failure(url: str, dataset_id: str, message: str) -> None:
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None:
            dataset.status = "failed"
            dataset.error = message
