"""Model cards and exported files of a model version."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from hilum.storage import Storage
from hilum.tables import Dataset, ModelVersion
from models.artifact import ClassifierArtifact
from pipelines.model_input import preprocessing_of
from service.domain import registry
from service.domain.predictions import scratch_warning
from service.domain.registry import unfit_warning
from service.schemas.models import ModelCard

_EXPORT_LOCK = threading.Lock()

INTENDED_USE = (
    "Decision support for adult frontal chest radiographs (PA/AP): flags likely pneumonia for review. "
    "Not a diagnosis; a clinician reads every image."
)
KNOWN_LIMITS = [
    "Trained on one site's data: performance at other sites, scanners or populations is unknown until measured.",
    "Frontal chest X-rays only; lateral views, other body parts and other modalities are refused or out of scope.",
    "The threshold was chosen on the validation split for the stated target sensitivity; it trades specificity "
    "for sensitivity and may need re-tuning on local data.",
    "Small validation and test splits give wide confidence intervals; see the bootstrap interval of the AUROC.",
]


def model_card(session: Session, storage: Storage, row: ModelVersion) -> ModelCard:
    """Intended use, training data make-up, validation and test figures, operating point, known limits."""
    artifact = ClassifierArtifact.load(storage.resolve(row.artifact_path))
    calibration = calibration_of(artifact)
    pretrained = artifact.pretrained
    operating_point, warnings = registry.operating_point(session, row, artifact, storage=storage)
    if pretrained is False:
        warnings.insert(0, scratch_warning(artifact))
    if not row.fit_for_use:
        warnings.insert(0, unfit_warning(row))
    dataset = session.get(Dataset, row.dataset_id) if row.dataset_id else None  # None: imported
    report = (dataset.report or {}) if dataset else {}
    meta = artifact.metadata
    card = {
        "model": row.model_name,
        "version": row.version,
        "created_at": row.created_at,
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
            "source": row.source,
            "warm_start": (meta.get("warm_start") or {}).get("description"),
            "spec": meta.get("spec"),
            "weights": meta.get("weights"),
            "best_epoch": meta.get("best_epoch"),
            "library_versions": meta.get("library_versions"),
        },
        "validation": artifact.metrics.get("val"),
        "test": artifact.metrics.get("test"),
        "operating_point": operating_point or {"threshold": None},
        "threshold_rule": threshold_rule(artifact),
        "operating_point_move": (artifact.operating_point or {}).get("test_move") or None,
        "calibration": calibration,
        "pretrained": pretrained,
        "weights": artifact.weights,
        "fit_for_use": row.fit_for_use,
        "fitness_reasons": row.fitness_reasons or [],
        "conformal": artifact.conformal or None,
        "out_of_distribution": _scalars(artifact.ood),
        "preprocessing": preprocessing_of(artifact),
        "warnings": warnings,
        "known_limits": [*KNOWN_LIMITS, *_limits(calibration, pretrained)],
    }
    return ModelCard.model_validate(card)


def threshold_rule(artifact: ClassifierArtifact) -> dict[str, Any] | None:
    """Which rule chose the trained threshold, and why that rule (None without a threshold)."""
    op = artifact.operating_point or {}
    if artifact.threshold is None or not op:
        return None
    kind = op.get("rule_kind") or "point_estimate"
    if kind == "lower_confidence_bound":
        why = (
            "a threshold tuned on a finite validation split loses sensitivity on new films; requiring the "
            f"one-sided {op.get('sensitivity_confidence', 0.95):.0%} Clopper-Pearson lower bound of the "
            "sensitivity (exact, never optimistic at small counts) to reach the target keeps a margin for that"
        )
    else:
        why = "the point estimate of validation sensitivity (no margin for sampling error)"
    return {
        "rule": op.get("rule"),
        "kind": kind,
        "target_sensitivity": op.get("target_sensitivity"),
        "sensitivity_confidence": op.get("sensitivity_confidence"),
        "sensitivity_lower_bound": op.get("sensitivity_lower_bound"),
        "chosen_on": op.get("split", "validation"),
        "why": why,
        "note": op.get("note"),
    }


def calibration_of(artifact: ClassifierArtifact) -> dict[str, Any]:
    """The artifact's calibration record; for an artifact older than the record, what can be said."""
    if artifact.calibration:
        return dict(artifact.calibration)
    temperature = float(artifact.temperature)
    return {
        "method": "temperature",
        "temperature": temperature,
        "applied": temperature != 1.0,
        "reason": None if temperature != 1.0 else "temperature 1.0: probabilities are the network's own",
    }


def _limits(calibration: dict[str, Any], pretrained: bool | None) -> list[str]:
    out = []
    if calibration.get("applied"):
        where = (
            "a calibration split held out of model selection"
            if calibration.get("calibration_split") == "calibration"
            else "the validation split only"
        )
        out.append(f"Probabilities are calibrated (temperature scaling) on {where}.")
    else:
        why = calibration.get("reason") or "not recorded"
        out.append(f"Probabilities are not calibrated (calibration was not applied: {why}).")
    if pretrained is False:
        out.append("Trained from random weights, not fine-tuned from pretrained ones: expect weaker results.")
    return out


def _scalars(values: dict | None) -> dict[str, Any] | None:
    """The plain numbers and words of a parameter dict (not its tensors or long lists)."""
    if not values:
        return None
    return {k: v for k, v in values.items() if isinstance(v, str | int | float | bool) or v is None}


def onnx_file(storage: Storage, row: ModelVersion) -> Path:
    """The version's ONNX export, made on first request (atomically) and kept beside the artifact."""
    from models.onnx_export import export_onnx

    artifact_path = storage.resolve(row.artifact_path)
    target = artifact_path.with_suffix(".onnx")
    if target.exists():
        return target
    # torch.onnx.export keeps global state and fails when two threads export at once: one export per
    # process at a time. Across processes each export writes its own file; the last os.replace wins.
    with _EXPORT_LOCK:
        if not target.exists():
            partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
            try:
                export_onnx(ClassifierArtifact.load(artifact_path), partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    return target
