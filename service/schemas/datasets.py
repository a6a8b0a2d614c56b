from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    rejected: list[RejectedFile] = []
    report: dict[str, Any] | None = Field(None, description="the full ingestion report")
    error: str | None = None
    created_at: datetime
    updated_at: datetime
