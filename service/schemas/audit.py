from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import UtcDatetime


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: UtcDatetime
    actor: str | None = Field(description="id of the API key that acted")
    action: str = Field(examples=["key.rotate"])
    target: str = Field(examples=["key:3f2a..."])
    details: dict[str, Any]
