"""API key management (admin only): issue, list, rotate with a grace period, revoke; every change audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.audit import record_audit
from hilum.keys import Role, create_key, key_is_active
from hilum.tables import ApiKey, utcnow
from service.errors import Conflict, Invalid, NotFound


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def issue_key(
    session: Session, *, name: str, role: Role, expires_at: datetime | None = None, actor: str | None = None
) -> tuple[ApiKey, str]:
    if expires_at is not None and _aware(expires_at) <= datetime.now(UTC):
        raise Invalid("expires_at must be in the future")
    row, plain = create_key(session, name=name, role=role, expires_at=expires_at)
    record_audit(
        session,
        actor=actor,
        action="key.create",
        target=f"key:{row.id}",
        details={"name": name, "role": role.value, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    session.commit()
    return row, plain


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def get_key(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"API key '{key_id}' not found")
    return row


def rotate_key(
    session: Session, key_id: str, *, grace_seconds: int, expires_at: datetime | None, actor: str
) -> tuple[ApiKey, str, ApiKey]:
    """Issue a successor (same name and role); the old key stays valid ``grace_seconds`` more.

    Returns (new row, new plain key, old row).
    """
    old = get_key(session, key_id)
    if not key_is_active(old):
        raise Conflict(f"API key '{key_id}' is revoked or expired: issue a new key instead")
    if old.replaced_by:
        raise Conflict(f"API key '{key_id}' was already rotated to '{old.replaced_by}'")
    if expires_at is not None and _aware(expires_at) <= datetime.now(UTC):
        raise Invalid("expires_at must be in the future")
    new, plain = create_key(session, name=old.name, role=Role(old.role), expires_at=expires_at)
    grace_end = utcnow() + timedelta(seconds=grace_seconds)
    if old.expires_at is None or _aware(old.expires_at) > grace_end:
        old.expires_at = grace_end
    old.replaced_by = new.id
    record_audit(
        session,
        actor=actor,
        action="key.rotate",
        target=f"key:{old.id}",
        details={"new_key": new.id, "grace_seconds": grace_seconds, "old_valid_until": old.expires_at.isoformat()},
    )
    session.commit()
    return new, plain, old


def revoke_key(session: Session, key_id: str, *, acting_key_id: str) -> ApiKey:
    row = get_key(session, key_id)
    if row.id == acting_key_id:
        raise Conflict("an admin cannot revoke the key it is using")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record_audit(session, actor=acting_key_id, action="key.revoke", target=f"key:{row.id}", details={})
        session.commit()
    return row
