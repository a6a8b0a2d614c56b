from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, computed_field

from hilum.keys import Role, key_is_active
from service.schemas.common import UtcDatetime


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["radiology-workstation-3"])
    role: Role = Field(examples=["clinician"])
    expires_at: UtcDatetime | None = Field(
        None, description="when the key stops working (ISO 8601 with a time zone); none: never"
    )


class KeyRotate(BaseModel):
    grace_seconds: int = Field(
        3600, ge=0, le=90 * 86400, description="how long the old key keeps working after rotation"
    )
    expires_at: UtcDatetime | None = Field(None, description="expiry of the new key; none: never")


class KeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    prefix: str = Field(description="first characters of the key, to recognise it")
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None
    expires_at: UtcDatetime | None = Field(None, description="after this the key no longer works")
    last_used_at: UtcDatetime | None = Field(None, description="last authenticated request (coarse: see settings)")
    replaced_by: str | None = Field(None, description="the key a rotation issued in its place")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def active(self) -> bool:
        return key_is_active(self)  # type: ignore[arg-type]


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret key; shown only in this answer")


class KeyRotated(BaseModel):
    key: KeyCreated = Field(description="the new key (its secret shown only here)")
    previous: KeyPublic = Field(description="the rotated key, valid until its expires_at")
