from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from service.schemas.common import UtcDatetime


class WeightsPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    backbone: str
    filename: str
    sha256: str
    format: str
    created_at: UtcDatetime
