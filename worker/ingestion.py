"""Ingest an uploaded archive into an immutable dataset version and record the outcome."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket

from hilum.configs import ingest_config
from hilum.db import session_scope
from hilum.jobstate import Claim, Heartbeat, claim_dataset
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import Dataset
from pipelines.archive import ArchiveRejected
from pipelines.imaging import ImageRejected
from pipelines.ingest import DatasetRejected, ingest_archive

log = logging.getLogger(__name__)


def run_ingestion(settings: Settings, dataset_id: str, *, worker: str = "") -> str:
    """Decode and normalise the upload of ``dataset_id``; idempotent (a ready dataset is left alone).

    The worker takes the dataset's lease first (``Claim.BUSY``: another live worker ingests it) and renews
    it while it works, so a dead worker's dataset is found and re-queued (hilum/recovery.py). Once
    ingestion ends, either way, the raw upload is deleted unless ``HILUM_UPLOAD_RETENTION_HOURS`` is set.
    """
    url = settings.resolved_database_url
    storage = Storage(settings.data_dir)
    me = f"{worker or socket.gethostname()}:{os.getpid()}"
    claim = claim_dataset(
        url,
        dataset_id,
        worker=me,
        lease_s=settings.job_lease_s,
        max_attempts=settings.job_max_attempts,
    )
    if claim != Claim.TAKEN:
        log.info("dataset %s: %s", dataset_id, "nothing to ingest" if claim == Claim.DONE else claim)
        if claim == Claim.DONE:
            release_upload(settings, storage, dataset_id)
        return claim
    with Heartbeat(url, dataset_id, every_s=settings.job_lease_s / 4, table=Dataset, worker=me):
        _ingest(settings, storage, dataset_id)
    release_upload(settings, storage, dataset_id)
    return Claim.DONE


def _ingest(settings: Settings, storage: Storage, dataset_id: str) -> None:
    url = settings.resolved_database_url
    out_dir = storage.dataset_dir(dataset_id)
    if out_dir.exists():  # a previous attempt finished writing but died before recording it
        report = json.loads((out_dir / "report.json").read_text())
    else:
        for stale in out_dir.parent.glob(f".{dataset_id}.tmp-*"):  # left by a worker killed mid-ingestion
            shutil.rmtree(stale, ignore_errors=True)
        upload = storage.upload_path(dataset_id)
        if not upload.exists():
            _record_failure(url, dataset_id, "the uploaded archive is gone; upload the dataset again")
            return
        try:
            report = ingest_archive(upload, out_dir, ingest_config(settings)).to_dict()
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


def release_upload(settings: Settings, storage: Storage, dataset_id: str) -> None:
    """Delete the raw upload (it holds every original DICOM header) unless a retention period is set."""
    if settings.upload_retention_hours > 0:
        return  # hilum/recovery.py sweep_uploads deletes it once the period has passed
    storage.upload_path(dataset_id).unlink(missing_ok=True)


def _record_failure(url: str, dataset_id: str, message: str) -> None:
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None:
            dataset.status = "failed"
            dataset.error = message
