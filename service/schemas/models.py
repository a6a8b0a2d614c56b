from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_name: str
    version: int
    backbone: str
    dataset_id: str
    job_id: str
    class_names: list[str]
    threshold: float | None = None
    metrics: dict[str, Any] = {}
    created_at: datetime


class ModelPublic(BaseModel):
    name: str
    latest_version: int
    aliases: dict[str, int] = Field({}, description="alias -> version, e.g. {'production': 3}")
    versions: list[ModelVersionPublic]


class AliasUpdate(BaseModel):
    version: int = Field(ge=1, examples=[3])


class AliasPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_name: str
    alias: str
    version: int
    updated_by: str | None = None
    updated_at: datetime


class AliasEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alias: str
    from_version: int | None = None
    to_version: int
    actor: str | None = None
    created_at: datetime


class PredictionRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    key_id: str | None = None
    model_name: str
    version: int
    input_sha256: str
    source_format: str | None = None
    label: str
    probabilities: dict[str, float]
    latency_ms: float | None = None


class PredictionPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "pneumonia",
                    "version": 3,
                    "label": "PNEUMONIA",
                    "probabilities": {"NORMAL": 0.08, "PNEUMONIA": 0.92},
                    "positive_class": "PNEUMONIA",
                    "threshold": 0.31,
                    "input_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                }
            ]
        }
    )

    model: str
    version: int
    label: str
    probabilities: dict[str, float] = Field(description="calibrated probability per class")
    positive_class: str | None = None
    threshold: float | None = Field(None, description="operating threshold on the positive class")
    operating_point: dict[str, Any] | None = Field(
        None, description="validation sensitivity and specificity at the threshold"
    )
    input_sha256: str
    prediction_id: str | None = Field(None, description="id of the recorded prediction")
    heatmap_png: str | None = Field(
        None,
        description="Grad-CAM overlay, base64 PNG, when heatmap=true: the image's width and height, "
        "or for a larger image its decoded size (longer side at most the server's max_image_side)",
    )


class BatchItem(BaseModel):
    file: str
    ok: bool
    prediction: PredictionPublic | None = None
    error: str | None = None


class BatchPrediction(BaseModel):
    model: str
    version: int
    results: list[BatchItem]


class CardTrainingData(BaseModel):
    dataset_id: str
    dataset_name: str | None = None
    images: int | None = None
    class_counts: dict[str, int] | None = Field(None, description="accepted images per class")
    patients: int | None = None
    imbalance_ratio: float | None = None
    source_formats: dict[str, int] | None = Field(None, description="accepted images per file format")


class ModelCard(BaseModel):
    model: str
    version: int
    created_at: datetime
    intended_use: str
    architecture: dict[str, Any]
    training_data: CardTrainingData
    training: dict[str, Any] = Field(description="job id, training spec, initial weights, library versions")
    validation: dict[str, Any] | None = Field(None, description="figures on the validation split")
    test: dict[str, Any] | None = Field(None, description="figures on the held-out test split")
    operating_point: dict[str, Any] = Field(description="threshold with its validation sensitivity and specificity")
    calibration: dict[str, Any]
    known_limits: list[str]
