from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class WeightsPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    backbone: str
    filename: str
    sha256: str
    format: str
    created_at: datetime
