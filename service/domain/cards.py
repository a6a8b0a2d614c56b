"""Model cards and exported files of a model version."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from hilum.storage import Storage
from hilum.tables import Dataset, ModelVersion
from models.artifact import ClassifierArtifact

INTENDED_USE = (
    "Decision support for adult frontal chest radiographs (PA/AP): flags likely pneumonia for review. "
    "Not a diagnosis; a clinician reads every image."
)
KNOWN_LIMITS = [
    "Trained on one site's data: performance at other sites, scanners or populations is unknown until measured.",
    "Frontal chest X-rays only; lateral views, other body parts and other modalities are refused or out of scope.",
    "The threshold was chosen on the validation split for the stated target sensitivity; it trades specificity "
    "for sensitivity and may need re-tuning on local data.",
    "Probabilities are calibrated (temperature scaling) on the validation split only.",
    "Small validation and test splits give wide confidence intervals; see the bootstrap interval of the AUROC.",
]


def model_card(session: Session, storage: Storage, row: ModelVersion) -> dict[str, Any]:
    """Intended use, training data make-up, validation and test figures, operating point, known limits."""
    artifact = ClassifierArtifact.load(storage.resolve(row.artifact_path))
    dataset = session.get(Dataset, row.dataset_id)
    report = (dataset.report or {}) if dataset else {}
    meta = artifact.metadata
    return {
        "model": row.model_name,
        "version": row.version,
        "created_at": row.created_at.isoformat(),
        "intended_use": INTENDED_USE,
        "architecture": {
            "backbone": artifact.backbone,
            "image_size": artifact.image_size,
            "classes": list(artifact.class_names),
            "positive_class": artifact.positive_class,
        },
        "training_data": {
            "dataset_id": row.dataset_id,
            "dataset_name": dataset.name if dataset else None,
            "images": report.get("accepted"),
            "class_counts": report.get("class_counts"),
            "patients": report.get("patient_count"),
            "imbalance_ratio": report.get("imbalance_ratio"),
            "source_formats": report.get("formats"),
        },
        "training": {
            "job_id": row.job_id,
            "spec": meta.get("spec"),
            "weights": meta.get("weights"),
            "best_epoch": meta.get("best_epoch"),
            "library_versions": meta.get("library_versions"),
        },
        "validation": artifact.metrics.get("val"),
        "test": artifact.metrics.get("test"),
        "operating_point": {"threshold": artifact.threshold, **(artifact.operating_point or {})},
        "calibration": {"method": "temperature scaling", "temperature": artifact.temperature},
        "known_limits": KNOWN_LIMITS,
    }


def onnx_file(storage: Storage, row: ModelVersion) -> Path:
    """The version's ONNX export, made on first request (atomically) and kept beside the artifact."""
    from models.onnx_export import export_onnx

    artifact_path = storage.resolve(row.artifact_path)
    target = artifact_path.with_suffix(".onnx")
    if not target.exists():
        # Unique per call: concurrent first requests (threads of one process, or several processes)
        # each export to their own file, and the last os.replace wins with a complete one.
        partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
        try:
            export_onnx(ClassifierArtifact.load(artifact_path), partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target
