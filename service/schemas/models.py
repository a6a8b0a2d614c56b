from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import MAX_DB_INT, UtcDatetime


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_name: str
    version: int
    backbone: str
    dataset_id: str | None = Field(description="the dataset it was trained on here; null for an imported version")
    job_id: str | None = Field(description="the job that trained it; null for an imported version")
    source: str = Field(
        "trained", description="'trained' (by a job here) or 'imported:<sha256 prefix>'", examples=["trained"]
    )
    class_names: list[str]
    threshold: float | None = Field(None, description="the effective operating threshold (the registry's)")
    metrics: dict[str, Any] = {}
    created_at: UtcDatetime
    fit_for_use: bool = Field(
        True, description="false when validation showed no real skill: never the default, never `production`"
    )
    fitness_reasons: list[str] = Field([], examples=[["validation AUROC 95% interval lower bound 0.41 <= 0.5"]])


class ModelPublic(BaseModel):
    name: str
    latest_version: int
    aliases: dict[str, int] = Field({}, description="alias -> version, e.g. {'production': 3}")
    versions: list[ModelVersionPublic]


class AliasUpdate(BaseModel):
    version: int = Field(ge=1, le=MAX_DB_INT, examples=[3])


class AliasPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_name: str
    alias: str
    version: int
    updated_by: str | None = None
    updated_at: UtcDatetime


class AliasEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alias: str
    from_version: int | None = None
    to_version: int
    actor: str | None = None
    created_at: UtcDatetime


class PredictionRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: UtcDatetime
    key_id: str | None = None
    model_name: str
    version: int
    input_sha256: str
    source_format: str | None = None
    label: str
    probabilities: dict[str, float]
    latency_ms: float | None = None


class OperatingPoint(BaseModel):
    """The threshold a label is given at, with its validation sensitivity and specificity (95% intervals)."""

    model_config = ConfigDict(extra="allow")

    threshold: float | None = Field(None, description="operating threshold on the positive class's probability")
    sensitivity: float | None = Field(None, description="validation sensitivity at the threshold")
    sensitivity_ci95: list[float] | None = Field(None, description="95% interval of the sensitivity [lo, hi]")
    specificity: float | None = Field(None, description="validation specificity at the threshold")
    specificity_ci95: list[float] | None = Field(None, description="95% interval of the specificity [lo, hi]")
    rule: str | None = Field(None, description="how the threshold was chosen")
    n_pos: int | None = Field(None, description="positive validation films the figures come from")
    n_neg: int | None = Field(None, description="negative validation films the figures come from")
    changed_by: str | None = Field(None, description="key id that changed the threshold, when it was changed")
    changed_at: UtcDatetime | None = None


OPERATING_POINT_EXAMPLE: dict[str, Any] = {
    "threshold": 0.31,
    "sensitivity": 0.95,
    "sensitivity_ci95": [0.87, 0.98],
    "specificity": 0.81,
    "specificity_ci95": [0.7, 0.89],
    "rule": "highest threshold with validation sensitivity >= 0.95",
    "n_pos": 60,
    "n_neg": 58,
    "changed_by": None,
    "changed_at": None,
}

HEATMAP_SCALE_EXAMPLE: dict[str, Any] = {
    "min": 0.0,
    "max": 1.0,
    "colormap": "jet",
    "meaning": "class evidence on one fixed scale for every film: transparent at 0, red at 1",
}


class Heatmap(BaseModel):
    """Grad-CAM of one class over the film, at the film's own size (aspect ratio kept)."""

    class_name: str = Field(description="the class the map explains (the predicted one unless heatmap_class)")
    png_base64: str = Field(description="overlay PNG (RGB, width x height), base64")
    legend_png_base64: str | None = Field(None, description="the colour bar with what it means, PNG, base64")
    width: int
    height: int
    scale: dict[str, Any] = Field(description="the colour scale: min, max, colour map, what it means")
    array_b64: str | None = Field(
        None, description="with heatmap_format=array: the raw map, float16 little-endian, row-major H x W, base64"
    )
    array_shape: list[int] | None = Field(None, description="[height, width] of array_b64")


class PredictionPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "pneumonia",
                    "version": 3,
                    "label": "PNEUMONIA",
                    "label_withheld": False,
                    "probabilities": {"NORMAL": 0.08, "PNEUMONIA": 0.92},
                    "positive_class": "PNEUMONIA",
                    "threshold": 0.31,
                    "operating_point": OPERATING_POINT_EXAMPLE,
                    "prediction_set": ["PNEUMONIA"],
                    "coverage": 0.9,
                    "in_distribution": True,
                    "ood_score": 12.4,
                    "ood_threshold": 31.0,
                    "pretrained": True,
                    "fit_for_use": True,
                    "warnings": [],
                    "input_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "prediction_id": "5d41402abc4b2a76b9719d911017c592",
                    "heatmap": None,
                    "tta": None,
                },
                {
                    "model": "pneumonia",
                    "version": 3,
                    "label": None,
                    "label_withheld": True,
                    "probabilities": {"NORMAL": 0.41, "PNEUMONIA": 0.59},
                    "positive_class": "PNEUMONIA",
                    "threshold": 0.31,
                    "operating_point": OPERATING_POINT_EXAMPLE,
                    "prediction_set": ["NORMAL", "PNEUMONIA"],
                    "coverage": 0.9,
                    "in_distribution": False,
                    "ood_score": 88.2,
                    "ood_threshold": 31.0,
                    "pretrained": False,
                    "fit_for_use": True,
                    "warnings": [
                        "this film looks unlike the films the model was trained on (out-of-distribution score "
                        "88.2 above 31.0): label withheld; ask with label_when_ood=true to see it",
                        "uncertain: the 90% prediction set holds every class; refer to a radiologist",
                        "trained from random weights (weights: none), not from pretrained weights",
                    ],
                    "input_sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
                    "prediction_id": "7d793037a0760186574b0282f2f435e7",
                    "heatmap": {
                        "class_name": "PNEUMONIA",
                        "png_base64": "iVBORw0KGgo...",
                        "legend_png_base64": "iVBORw0KGgo...",
                        "width": 448,
                        "height": 512,
                        "scale": HEATMAP_SCALE_EXAMPLE,
                        "array_b64": None,
                        "array_shape": None,
                    },
                },
            ]
        }
    )

    model: str
    version: int
    label: str | None = Field(
        description="the class at the operating threshold; null when withheld (film out of distribution)"
    )
    label_withheld: bool = Field(
        False, description="true when the film is out of distribution and label_when_ood was not asked"
    )
    probabilities: dict[str, float] = Field(description="calibrated probability per class")
    positive_class: str | None = None
    threshold: float | None = Field(None, description="operating threshold on the positive class (the registry's)")
    operating_point: OperatingPoint | None = Field(
        None, description="the threshold with its validation sensitivity and specificity and 95% intervals"
    )
    prediction_set: list[str] | None = Field(
        None,
        description="conformal prediction set at `coverage`: one class, or every class, which means "
        "'uncertain: refer to a radiologist'",
    )
    coverage: float | None = Field(None, description="the prediction set's guaranteed coverage, e.g. 0.9")
    in_distribution: bool | None = Field(
        None, description="false when the film looks unlike the training films; null when the model cannot tell"
    )
    ood_score: float | None = Field(None, description="out-of-distribution score (higher: more unusual)")
    ood_threshold: float | None = Field(None, description="scores above it are out of distribution")
    pretrained: bool | None = Field(
        None, description="whether the model was fine-tuned from pretrained weights (false: random weights)"
    )
    fit_for_use: bool = Field(True, description="false: the version showed no real skill on validation")
    warnings: list[str] = Field([], description="what a clinician must know about this answer, in plain words")
    input_sha256: str
    prediction_id: str | None = Field(None, description="id of the recorded prediction")
    heatmap: Heatmap | None = Field(None, description="with heatmap=true: Grad-CAM of one class at the film's size")
    tta: int | None = Field(
        None, description="with tta=true: how many film variants' logits were averaged; null when off", examples=[5]
    )


class ThresholdUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"threshold": 0.42, "reason": "re-tuned on 300 local films (ward 3)"}]},
    )

    threshold: float = Field(gt=0, lt=1, description="new operating threshold on the positive class's probability")
    reason: str = Field(min_length=3, max_length=2000, description="why, recorded with who and when")


class ThresholdPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "pneumonia",
                    "version": 3,
                    "threshold": 0.42,
                    "artifact_threshold": 0.31,
                    "operating_point": {
                        **OPERATING_POINT_EXAMPLE,
                        "threshold": 0.42,
                        "sensitivity": 0.9,
                        "changed_by": "a1b2c3",
                        "changed_at": "2026-11-24T15:02:11Z",
                    },
                }
            ]
        }
    )

    model: str
    version: int
    threshold: float | None = Field(description="the effective threshold, used by every prediction")
    artifact_threshold: float | None = Field(description="the threshold training chose, kept in the artifact")
    operating_point: OperatingPoint | None = None


class ThresholdEventPublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "version": 3,
                    "old_threshold": 0.31,
                    "new_threshold": 0.42,
                    "reason": "re-tuned on 300 local films (ward 3)",
                    "actor": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                    "created_at": "2026-11-24T15:02:11Z",
                }
            ]
        },
    )

    version: int
    old_threshold: float | None = None
    new_threshold: float
    reason: str
    actor: str | None = Field(None, description="key id of who changed it")
    created_at: UtcDatetime


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
    dataset_id: str | None = Field(None, description="null for a version imported from another site")
    dataset_name: str | None = None
    images: int | None = None
    class_counts: dict[str, int] | None = Field(None, description="accepted images per class")
    patients: int | None = None
    imbalance_ratio: float | None = None
    source_formats: dict[str, int] | None = Field(None, description="accepted images per file format")


class ModelCard(BaseModel):
    model: str
    version: int
    created_at: UtcDatetime
    intended_use: str
    architecture: dict[str, Any]
    training_data: CardTrainingData
    training: dict[str, Any] = Field(
        description="job id, training spec, initial weights (warm_start: the registered version it started from), "
        "library versions, source ('trained' or 'imported:<sha256 prefix>')"
    )
    validation: dict[str, Any] | None = Field(None, description="figures on the validation split")
    test: dict[str, Any] | None = Field(None, description="figures on the held-out test split")
    operating_point: OperatingPoint = Field(
        description="the effective threshold with its validation sensitivity and specificity"
    )
    threshold_rule: dict[str, Any] | None = Field(
        None,
        description="the rule that chose the trained threshold, and why",
        examples=[
            {
                "rule": "the highest threshold whose one-sided 95% Clopper-Pearson lower bound on validation "
                "sensitivity is at least 0.95",
                "kind": "lower_confidence_bound",
                "target_sensitivity": 0.95,
                "sensitivity_confidence": 0.95,
                "sensitivity_lower_bound": 0.951,
                "chosen_on": "calibration",
                "why": "a threshold tuned on a finite split loses sensitivity on new films; the bound keeps a margin",
                "note": None,
            }
        ],
    )
    operating_point_move: dict[str, Any] | None = Field(
        None,
        description="sensitivity and specificity at the trained threshold on the split it was chosen on and on "
        "test (Wilson 95% intervals), with the deltas (test - chosen split)",
        examples=[
            {
                "threshold": 0.31,
                "chosen_on": "validation",
                "splits": {
                    "validation": {"sensitivity": 0.97, "specificity": 0.84, "n_pos": 120, "n_neg": 60},
                    "test": {"sensitivity": 0.95, "specificity": 0.78, "n_pos": 390, "n_neg": 234},
                },
                "delta": {"test": {"sensitivity": -0.02, "specificity": -0.06}},
            }
        ],
    )
    calibration: dict[str, Any] = Field(
        description="whether calibration was applied, and why not: method, temperature, applied, reason, "
        "NLL and ECE before and after",
        examples=[
            {
                "method": "temperature",
                "temperature": 1.0,
                "applied": False,
                "reason": "validation ECE would rise (0.019 -> 0.242): kept the uncalibrated model",
                "ece_before": 0.019,
                "ece_after": 0.019,
            }
        ],
    )
    pretrained: bool | None = Field(None, description="false: trained from random weights", examples=[False])
    weights: str | None = Field(None, description="initial weights: none, imagenet, or local:<file>", examples=["none"])
    fit_for_use: bool = Field(True, examples=[True])
    fitness_reasons: list[str] = Field([], examples=[[]])
    conformal: dict[str, Any] | None = Field(
        None,
        description="prediction sets: method, coverage, empirical coverage on the test split",
        examples=[{"method": "split-conformal (LAC)", "coverage": 0.9, "n_cal": 40, "empirical_test_coverage": 0.91}],
    )
    out_of_distribution: dict[str, Any] | None = Field(
        None,
        description="OOD score method, threshold, validation false-positive rate",
        examples=[{"method": "mahalanobis", "threshold": 31.0, "val_fpr": 0.05}],
    )
    preprocessing: dict[str, Any] | None = Field(
        None,
        description="everything the input path uses: max side, image size, mean, std, interpolation",
        examples=[
            {
                "max_side": 512,
                "image_size": 224,
                "mean": 0.449,
                "std": 0.226,
                "interpolation": "bilinear-antialias",
                "pad": "centre-square",
                "chest_check": True,
            }
        ],
    )
    warnings: list[str] = Field(
        [], examples=[["trained from random weights (weights: none), not from pretrained weights: ..."]]
    )
    known_limits: list[str]
