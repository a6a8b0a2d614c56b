"""Model registry: every succeeded job adds one immutable, numbered version of a named model.

A version's fitness for use is fixed here, from the artifact's own ``fitness`` (training decides whether
the model learned anything); an artifact without one (made before fitness was judged) counts as fit.
"""

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
    """Add the next version of ``job.model_name``; a job registers at most one version.

    Not committed. Two jobs of one model finishing together pick the same number: the second fails on the
    (model_name, version) key at the flush, before writing its file, and its caller retries
    (``hilum.jobstate.record_training_result``)."""
    fit, reasons = artifact_fitness(artifact)
    existing = session.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_name == job.model_name))
    version = (latest or 0) + 1
    target = storage.model_version_dir(job.model_name, version)
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
        fit_for_use=fit,
        fitness_reasons=reasons,
    )
    session.add(row)
    # The flush claims the number: a concurrent registration of the same one fails here (IntegrityError on
    # the (model_name, version) key) before it has touched the winner's folder. Only then is the file written.
    session.flush()
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact, target / "model.pt")
    return row


def register_imported(
    session: Session, storage: Storage, model_name: str, artifact: Path, *, source: str
) -> ModelVersion:
    """Add the next version of ``model_name`` from an artifact trained elsewhere (no job, no dataset here).

    Not committed; a concurrent registration of the same number fails on the (model_name, version) key.
    """
    from models.artifact import ClassifierArtifact

    loaded = ClassifierArtifact.load(artifact)
    fit, reasons = artifact_fitness(artifact)
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name))
    version = (latest or 0) + 1
    target = storage.model_version_dir(model_name, version)
    row = ModelVersion(
        model_name=model_name,
        version=version,
        backbone=loaded.backbone,
        artifact_path=storage.relative(target / "model.pt"),
        class_names=list(loaded.class_names),
        threshold=loaded.threshold,
        metrics=dict(loaded.metrics),
        fit_for_use=fit,
        fitness_reasons=reasons,
        source=source,
    )
    session.add(row)
    session.flush()  # claims the number before the file is written (see register_version)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact, target / "model.pt")
    return row


def warm_start_source(session: Session, init_from: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's ``init_from`` with the registered version's ``artifact_path`` (relative to the data dir)."""
    if not init_from:
        return None
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_name == init_from["model"], ModelVersion.version == init_from["version"]
        )
    )
    if row is None:
        raise ValueError(f"init_from: model '{init_from['model']}' has no version {init_from['version']}")
    return {**init_from, "artifact_path": row.artifact_path}


def artifact_fitness(path: Path) -> tuple[bool, list[str]]:
    """(fit for use, reasons) from the artifact's ``fitness`` dict: ``{"fit_for_use": bool, "reasons": [...]}``."""
    from models.artifact import ClassifierArtifact

    artifact = ClassifierArtifact.load(path)
    fitness = artifact.fitness or {}
    fit = bool(fitness.get("fit_for_use", True))
    reasons = [str(r) for r in fitness.get("reasons") or []]
    if not fit and not reasons:
        reasons = ["training judged the model unfit for use without giving a reason"]
    return fit, reasons
