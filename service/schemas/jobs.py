from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from service.schemas.common import MAX_DB_INT, UtcDatetime

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
SCRATCH_WARNING = (
    "no pretrained weights (weights: none): the model is trained from random weights, which needs far more "
    "films and epochs, and its card and every prediction say so; pass weights 'imagenet' or the id of a "
    "registered weights file (POST /v1/weights) to fine-tune instead"
)


class InitFrom(BaseModel):
    """Warm start: begin from a registered model version's weights (its backbone, head rows mapped by class)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "pneumonia", "version": 3, "class_map": {"OPACITY": "PNEUMONIA"}}]},
    )

    model: str = Field(pattern=MODEL_NAME_PATTERN, examples=["pneumonia"])
    version: int = Field(ge=1, le=MAX_DB_INT, examples=[3])
    class_map: dict[str, str | None] | None = Field(
        None,
        description="new class -> class of the registered version whose head row it starts from (null: a fresh "
        "row); classes of the same name match without it, any other class must be mapped",
        examples=[{"OPACITY": "PNEUMONIA", "COVID": None}],
    )


class RecipeFields(BaseModel):
    """The training recipe's fields, shared by a job and a sweep's members (defaults: pipelines/training/spec.py)."""

    sensitivity_confidence: float = Field(
        0.95,
        ge=0,
        lt=1,
        description="the threshold must keep sensitivity's one-sided lower bound (Clopper-Pearson) at this "
        "confidence >= target_sensitivity; 0 uses the point estimate",
    )
    augment: Literal["scanner", "basic", "none"] = Field(
        "scanner",
        description="training augmentation: 'scanner' mimics other scanners (contrast/gamma, window/level, blur, "
        "grain, down-up sampling, collimation bands, small rotation and scale), 'basic' only small geometry "
        "and brightness, 'none' off; never flips",
    )
    label_smoothing: float = Field(0.1, ge=0, le=0.5, description="share of each label spread over the classes")
    ema_decay: float | None = Field(
        0.998,
        gt=0,
        lt=1,
        description="decay of the moving average of the weights that is validated and kept; null: the raw weights",
    )
    early_stopping_patience: int | None = Field(
        3, ge=1, le=300, description="epochs without improvement before training stops; null: train every epoch"
    )
    early_stopping_metric: Literal["auroc", "auroc_loss"] = Field(
        "auroc_loss",
        description="'auroc_loss': an epoch improves on a higher validation AUROC or, at an equal AUROC (it often "
        "saturates at 1.0), a lower validation loss; 'auroc': on a higher AUROC only (a tie on loss keeps the "
        "weights but not the clock)",
    )


class JobCreate(RecipeFields):
    """A training job. Fields beyond the first seven have sensible defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "3f0c2b1a9d8e4f7a8b6c5d4e3f2a1b0c",
                    "backbone": "resnet18",
                    "strategy": "gradual",
                    "epochs": 10,
                    "image_size": 224,
                    "batch_size": 32,
                    "model_name": "pneumonia",
                    "augment": "scanner",
                    "label_smoothing": 0.1,
                    "ema_decay": 0.998,
                    "early_stopping_patience": 3,
                }
            ]
        },
    )

    dataset_id: str
    backbone: str | None = Field(
        None,
        examples=["resnet18", "efficientnet_b0", "test_resnet"],
        description="required unless init_from is given (then it is the registered version's, and may be omitted)",
    )
    strategy: Literal["frozen", "full", "gradual"]
    epochs: int = Field(ge=1, le=300)
    image_size: int = Field(224, ge=32, le=1024)
    batch_size: int = Field(32, ge=1, le=1024)
    model_name: str = Field("pneumonia", pattern=MODEL_NAME_PATTERN)
    weights: str = Field("none", description="'none' (random init), 'imagenet' (timm hub) or a registered weights id")
    init_from: InitFrom | None = Field(
        None, description="warm-start from a registered model version instead of `weights` (which must stay 'none')"
    )
    lr: float | None = Field(None, gt=0, le=1.0)
    seed: int = Field(0, ge=0)
    target_sensitivity: float = Field(0.95, gt=0, lt=1)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model_name: str
    spec: dict[str, Any]
    weights: str = Field(description="'none', 'imagenet', 'local:<file>' or, for a warm start, 'init:<model>/v<n>'")
    init_from: dict[str, Any] | None = Field(
        None,
        description="the registered version the job warm-starts from (model, version, class_map)",
        examples=[{"model": "pneumonia", "version": 3, "class_map": None}],
    )
    progress: dict[str, Any] = {}
    metrics: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    worker: str | None = Field(None, description="the Celery worker that ran (or runs) the job")
    cancel_requested: bool = False
    model_version: int | None = None
    sweep_id: str | None = Field(None, description="the sweep this job is a member of (it registers no version itself)")
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None

    @computed_field(  # type: ignore[prop-decorator]
        description="false when the job trains from random weights (weights: none), not from pretrained ones"
    )
    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    @computed_field(  # type: ignore[prop-decorator]
        description="what to know about the job before trusting its model", examples=[[SCRATCH_WARNING]]
    )
    @property
    def warnings(self) -> list[str]:
        return [] if self.pretrained else [SCRATCH_WARNING]
