"""API keys: generated once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.tables import ApiKey

KEY_PREFIX = "hk_"


class Role(StrEnum):
    admin = "admin"
    staff = "staff"
    clinician = "clinician"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(session: Session, *, name: str, role: Role, key: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key (or the given one) and return the row with the plain key."""
    plain = key or generate_key()
    row = ApiKey(name=name, role=role.value, key_hash=hash_key(plain), prefix=plain[:8])
    session.add(row)
    session.flush()
    return row, plain


def find_active_key(session: Session, plain: str) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def ensure_bootstrap_admin(session: Session, bootstrap_key: str | None) -> str | None:
    """Make sure an admin key exists. Returns a newly generated plain key (to print once), else None."""
    if bootstrap_key:
        if find_active_key(session, bootstrap_key) is None:
            create_key(session, name="bootstrap-admin", role=Role.admin, key=bootstrap_key)
        return None
    has_admin = session.scalar(
        select(ApiKey.id).where(ApiKey.role == Role.admin.value, ApiKey.revoked_at.is_(None)).limit(1)
    )
    if has_admin:
        return None
    _, plain = create_key(session, name="generated-admin", role=Role.admin)
    return plain
