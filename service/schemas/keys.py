from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from hilum.keys import Role


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["radiology-workstation-3"])
    role: Role = Field(examples=["clinician"])


class KeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    prefix: str = Field(description="first characters of the key, to recognise it")
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret key; shown only in this answer")
