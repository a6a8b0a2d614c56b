from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from service.schemas.common import UtcDatetime

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
SCRATCH_WARNING = (
    "no pretrained weights (weights: none): the model is trained from random weights, which needs far more "
    "films and epochs, and its card and every prediction say so; pass weights 'imagenet' or the id of a "
    "registered weights file (POST /v1/weights) to fine-tune instead"
)


class JobCreate(BaseModel):
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
                }
            ]
        },
    )

    dataset_id: str
    backbone: str = Field(examples=["resnet18", "efficientnet_b0", "test_resnet"])
    strategy: Literal["frozen", "full", "gradual"]
    epochs: int = Field(ge=1, le=300)
    image_size: int = Field(224, ge=32, le=1024)
    batch_size: int = Field(32, ge=1, le=1024)
    model_name: str = Field("pneumonia", pattern=MODEL_NAME_PATTERN)
    weights: str = Field("none", description="'none' (random init), 'imagenet' (timm hub) or a registered weights id")
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
    weights: str
    progress: dict[str, Any] = {}
    metrics: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    worker: str | None = Field(None, description="the Celery worker that ran (or runs) the job")
    cancel_requested: bool = False
    model_version: int | None = None
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
