from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import UtcDatetime


class RejectedFile(BaseModel):
    file: str
    reason: str


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: Literal["ingesting", "ready", "failed"]
    upload_filename: str | None = None
    upload_bytes: int = 0
    layout: str | None = Field(None, description="'folders' (class folders) or 'csv' (labels.csv)")
    classes: list[str] = []
    image_count: int = 0
    class_counts: dict[str, int] = {}
    rejected: list[RejectedFile] = Field(
        [], description="the first rejected files (100 at most); all of them: GET /v1/datasets/{id}/rejections"
    )
    rejected_total: int = Field(0, description="how many files were rejected")
    rejected_by_reason: dict[str, int] = Field({}, description="rejected files counted by reason")
    warnings: list[str] = Field([], description="surprises in the labels (unexpected classes, merged spellings)")
    report: dict[str, Any] | None = Field(None, description="the ingestion report")
    error: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RejectionsPage(BaseModel):
    """A page of a dataset's rejected files, in ingestion order."""

    total: int
    offset: int
    limit: int
    items: list[RejectedFile]
