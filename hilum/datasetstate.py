"""Dataset state transitions, written to the database (the only place dataset state lives).

The lease (claim and heartbeat) is shared with jobs and lives in ``hilum.jobstate``; this module is what
ingestion calls to take a dataset and to record how its ingestion ended.
"""

from __future__ import annotations

from typing import Any

from hilum.db import session_scope
from hilum.jobstate import Claim, Heartbeat, claim_dataset
from hilum.tables import Dataset

__all__ = ["Claim", "claim_dataset", "dataset_heartbeat", "mark_failed", "mark_ready"]


def dataset_heartbeat(url: str, dataset_id: str, *, every_s: float, worker: str) -> Heartbeat:
    """Renew this worker's lease on the dataset while it ingests (a context manager)."""
    return Heartbeat(url, dataset_id, every_s=every_s, table=Dataset, worker=worker)


def mark_ready(url: str, dataset_id: str, report: dict[str, Any]) -> None:
    """The version is on disk: record its report, classes and counts, and make it usable for training."""
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            return
        dataset.status = "ready"
        dataset.error = None
        dataset.report = report
        dataset.classes = list(report["classes"])
        dataset.class_counts = dict(report["class_counts"])
        dataset.image_count = int(report["accepted"])


def mark_failed(url: str, dataset_id: str, message: str) -> None:
    """Ingestion refused or failed: ``message`` says what to fix (it is shown to the uploader)."""
    with session_scope(url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None:
            dataset.status = "failed"
            dataset.error = message
