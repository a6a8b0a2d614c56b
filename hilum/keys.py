"""API keys: generated once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from hilum.tables import ApiKey

log = logging.getLogger(__name__)

KEY_PREFIX = "hk_"


class Role(StrEnum):
    admin = "admin"
    staff = "staff"
    clinician = "clinician"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(
    session: Session, *, name: str, role: Role, key: str | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Store a new key (or the given one) and return the row with the plain key."""
    plain = key or generate_key()
    row = ApiKey(name=name, role=role.value, key_hash=hash_key(plain), prefix=plain[:8], expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, plain


def key_is_active(row: ApiKey, now: datetime | None = None) -> bool:
    """The one validity rule: not revoked and not past its expiry (a rotated key expires after its grace)."""
    if row.revoked_at is not None:
        return False
    if row.expires_at is None:
        return True
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)  # SQLite: naive
    return (now or datetime.now(UTC)) < expires


def find_active_key(session: Session, plain: str) -> ApiKey | None:
    """The key row for a plain key if it is valid now (see ``key_is_active``), else None."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain)))
    if row is None or not key_is_active(row):
        return None
    return row


def touch_key(session: Session, row: ApiKey, *, every_s: float) -> None:
    """Record that ``row`` was used now, writing at most every ``every_s`` seconds (and committing then)."""
    now = datetime.now(UTC)
    last = row.last_used_at
    if last is not None and (now - (last if last.tzinfo else last.replace(tzinfo=UTC))).total_seconds() < every_s:
        return
    session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    session.commit()
    set_committed_value(row, "last_used_at", now)  # no second UPDATE at the request's own commit


def ensure_bootstrap_admin(session: Session, bootstrap_key: str | None) -> str | None:
    """Make sure an admin key exists. Returns a newly generated plain key (to print once), else None."""
    if bootstrap_key:
        _ensure_given_bootstrap_key(session, bootstrap_key)
        return None
    admins = session.scalars(select(ApiKey).where(ApiKey.role == Role.admin.value, ApiKey.revoked_at.is_(None)))
    if any(key_is_active(row) for row in admins):  # an expired admin key is no admin: a new one is generated
        return None
    _, plain = create_key(session, name="generated-admin", role=Role.admin)
    return plain


def _ensure_given_bootstrap_key(session: Session, bootstrap_key: str) -> None:
    """Insert ``HILUM_BOOTSTRAP_ADMIN_KEY`` once; a revoked or expired one stays so (and start-up says so)."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(bootstrap_key)))
    if row is None:
        try:
            with session.begin_nested():  # several processes may start at once: the first insert wins
                create_key(session, name="bootstrap-admin", role=Role.admin, key=bootstrap_key)
        except IntegrityError:
            log.info("the bootstrap admin key was inserted by another process")
        return
    if not key_is_active(row):
        state = "revoked" if row.revoked_at is not None else "expired"
        log.warning(
            "HILUM_BOOTSTRAP_ADMIN_KEY (%s...) is %s and stays %s: it grants nothing; "
            "remove it or set a new key to have an admin key ensured at start-up",
            row.prefix,
            state,
            state,
        )
