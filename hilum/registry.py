"""Model registry: every succeeded job adds one immutable, numbered version of a named model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hilum.storage import Storage
from hilum.tables import Job, ModelVersion


def register_version(
    session: Session,
    storage: Storage,
    job: Job,
    *,
    artifact: Path,
    backbone: str,
    class_names: list[str],
    threshold: float | None,
    metrics: dict[str, Any],
) -> ModelVersion:
    """Add the next version of ``job.model_name``; a job registers at most one version."""
    existing = session.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_name == job.model_name))
    version = (latest or 0) + 1
    target = storage.model_version_dir(job.model_name, version)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact, target / "model.pt")
    row = ModelVersion(
        model_name=job.model_name,
        version=version,
        job_id=job.id,
        dataset_id=job.dataset_id,
        backbone=backbone,
        artifact_path=storage.relative(target / "model.pt"),
        class_names=class_names,
        threshold=threshold,
        metrics=metrics,
    )
    session.add(row)
    session.flush()
    return row
