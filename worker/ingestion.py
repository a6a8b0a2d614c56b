"""Ingest an uploaded archive into an immutable dataset version and record the outcome."""

from __future__ import annotations

import logging
import os
import shutil
import socket

from hilum.configs import ingest_config
from hilum.datasetstate import Claim, claim_dataset, dataset_heartbeat, mark_failed, mark_ready
from hilum.settings import Settings
from hilum.storage import Storage
from pipelines.archive import ArchiveRejected
from pipelines.dataset import load_report
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
    with dataset_heartbeat(url, dataset_id, every_s=settings.job_lease_s / 4, worker=me):
        _ingest(settings, storage, dataset_id)
    release_upload(settings, storage, dataset_id)
    return Claim.DONE


def _ingest(settings: Settings, storage: Storage, dataset_id: str) -> None:
    url = settings.resolved_database_url
    out_dir = storage.dataset_dir(dataset_id)
    if out_dir.exists():  # a previous attempt finished writing but died before recording it
        report = load_report(out_dir)
    else:
        for stale in out_dir.parent.glob(f".{dataset_id}.tmp-*"):  # left by a worker killed mid-ingestion
            shutil.rmtree(stale, ignore_errors=True)
        upload = storage.upload_path(dataset_id)
        if not upload.exists():
            mark_failed(url, dataset_id, "the uploaded archive is gone; upload the dataset again")
            return
        try:
            report = ingest_archive(upload, out_dir, ingest_config(settings)).to_dict()
        except (ArchiveRejected, DatasetRejected, ImageRejected) as exc:
            mark_failed(url, dataset_id, str(exc))
            return
        except Exception as exc:
            log.exception("dataset %s: ingestion crashed", dataset_id)
            mark_failed(url, dataset_id, f"ingestion failed: {type(exc).__name__}: {exc}")
            return
    mark_ready(url, dataset_id, report)
    log.info("dataset %s: ready, %d images", dataset_id, report["accepted"])


def release_upload(settings: Settings, storage: Storage, dataset_id: str) -> None:
    """Delete the raw upload (it holds every original DICOM header) unless a retention period is set."""
    if settings.upload_retention_hours > 0:
        return  # hilum/recovery.py sweep_uploads deletes it once the period has passed
    storage.upload_path(dataset_id).unlink(missing_ok=True)
