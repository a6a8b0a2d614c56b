"""API key management (admin only)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.keys import Role, create_key
from hilum.tables import ApiKey, utcnow
from service.errors import Conflict, NotFound


def issue_key(session: Session, *, name: str, role: Role) -> tuple[ApiKey, str]:
    row, plain = create_key(session, name=name, role=role)
    session.commit()
    return row, plain


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, key_id: str, *, acting_key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"API key '{key_id}' not found")
    if row.id == acting_key_id:
        raise Conflict("an admin cannot revoke the key it is using")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row
