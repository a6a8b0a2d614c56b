"""Model cards and exported files of a model version."""

from __future__ import annotations

import os
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
            "source_formats": report.get("source_formats"),
        },
        "training": {
            k: artifact.metadata.get(k) for k in ("job_spec", "job_id", "library_versions") if k in artifact.metadata
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
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        export_onnx(ClassifierArtifact.load(artifact_path), partial)
        os.replace(partial, target)
    return target
