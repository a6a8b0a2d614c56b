from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import UtcDatetime
from service.schemas.jobs import MODEL_NAME_PATTERN, RecipeFields

SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class SweepBudget(BaseModel):
    """Limits on a sweep. The grid is kept in request order while it fits ``max_jobs`` and ``max_total_epochs``
    (configs past the budget are listed as ``skipped``); ``max_minutes`` counts from creation, and members not
    started by then are cancelled."""

    model_config = ConfigDict(extra="forbid")

    max_jobs: int = Field(8, ge=1, le=64, description="at most this many member jobs")
    max_total_epochs: int | None = Field(None, ge=1, le=10_000, description="members x epochs at most this")
    max_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60, description="members not started by then are cancelled")


class SweepCreate(RecipeFields):
    """A grid of training jobs (backbones x strategies x image sizes); the best member becomes a version."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "3f0c2b1a9d8e4f7a8b6c5d4e3f2a1b0c",
                    "model_name": "pneumonia",
                    "backbones": ["resnet18", "efficientnet_b0"],
                    "strategies": ["frozen", "gradual"],
                    "image_sizes": [128, 224],
                    "epochs": 6,
                    "budget": {"max_jobs": 8, "max_total_epochs": 48, "max_minutes": 60},
                    "weights": "none",
                }
            ]
        },
    )

    dataset_id: str
    model_name: str = Field("pneumonia", pattern=MODEL_NAME_PATTERN)
    backbones: list[str] = Field(min_length=1, max_length=8, examples=[["resnet18", "efficientnet_b0"]])
    strategies: list[Literal["frozen", "full", "gradual"]] = Field(min_length=1, max_length=3)
    image_sizes: list[Annotated[int, Field(ge=32, le=1024)]] = Field(
        [224], min_length=1, max_length=8, examples=[[128, 224]]
    )
    epochs: int = Field(ge=1, le=300)
    budget: SweepBudget = SweepBudget()
    batch_size: int = Field(32, ge=1, le=1024)
    weights: str = Field("none", description="'none', 'imagenet' or a registered weights id (one backbone only)")
    lr: float | None = Field(None, gt=0, le=1.0)
    seed: int = Field(0, ge=0)
    target_sensitivity: float = Field(0.95, gt=0, lt=1)


class SweepConfig(BaseModel):
    backbone: str
    strategy: str
    image_size: int


class SweepMember(BaseModel):
    """One tried config: its job, how it ended, and what validation said."""

    job_id: str
    config: SweepConfig
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    val_auroc: float | None = None
    val_auroc_ci95: list[float] | None = Field(None, description="bootstrap 95% interval of the validation AUROC")
    val_loss: float | None = Field(None, description="validation cross-entropy at the kept epoch")
    seconds: float | None = Field(None, description="from start to end of the member job")
    best_epoch: int | None = None
    error: str | None = None
    best: bool = Field(False, description="the member registered as the sweep's version")


class SweepPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9a8b7c6d5e4f40318273645546372819",
                    "dataset_id": "3f0c2b1a9d8e4f7a8b6c5d4e3f2a1b0c",
                    "model_name": "pneumonia",
                    "status": "succeeded",
                    "members": [
                        {
                            "job_id": "0c1d2e3f405162738495a6b7c8d9e0f1",
                            "config": {"backbone": "resnet18", "strategy": "gradual", "image_size": 224},
                            "status": "succeeded",
                            "val_auroc": 0.981,
                            "val_auroc_ci95": [0.962, 0.994],
                            "val_loss": 0.21,
                            "seconds": 612.4,
                            "best_epoch": 5,
                            "error": None,
                            "best": True,
                        }
                    ],
                    "skipped": [],
                    "best_job_id": "0c1d2e3f405162738495a6b7c8d9e0f1",
                    "model_version": 4,
                    "error": None,
                    "cancel_requested": False,
                    "request": {"backbones": ["resnet18"], "strategies": ["gradual"], "image_sizes": [224]},
                    "created_at": "2026-01-31T09:15:00Z",
                    "deadline_at": None,
                    "finished_at": "2026-01-31T09:26:00Z",
                }
            ]
        }
    )

    id: str
    dataset_id: str
    model_name: str
    status: SweepStatus
    members: list[SweepMember]
    skipped: list[SweepConfig] = Field([], description="grid configs left out by the budget, in grid order")
    best_job_id: str | None = None
    model_version: int | None = Field(None, description="the version of model_name the best member became")
    error: str | None = Field(None, description="why the sweep ended without a version")
    cancel_requested: bool = False
    request: dict[str, Any]
    created_at: UtcDatetime
    deadline_at: UtcDatetime | None = Field(None, description="created_at + budget.max_minutes")
    finished_at: UtcDatetime | None = None
