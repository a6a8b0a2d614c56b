"""The audit log of admin actions (keys, weights, alias and threshold moves).

Callers record inside their own transaction, so an action and its audit row commit together.
Details hold identifiers and settings only: never a key, never patient data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.tables import AuditEvent


def record_audit(
    session: Session, *, actor: str | None, action: str, target: str, details: dict[str, Any] | None = None
) -> AuditEvent:
    """Add one audit event (``action`` such as ``key.rotate``; ``actor`` the acting key id); not committed."""
    row = AuditEvent(actor=actor, action=action, target=target, details=dict(details or {}))
    session.add(row)
    return row


def list_audit(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> Sequence[AuditEvent]:
    """Audit events, newest first; ``action`` ending in ``.`` or ``*`` matches a prefix (``key.``)."""
    query = select(AuditEvent)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        is_prefix = action.endswith(("*", "."))
        query = query.where(
            AuditEvent.action.startswith(action.rstrip("*"), autoescape=True)
            if is_prefix
            else AuditEvent.action == action
        )
    if target:
        query = query.where(AuditEvent.target == target)
    if since:
        query = query.where(AuditEvent.created_at >= since)
    if until:
        query = query.where(AuditEvent.created_at < until)
    return session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()
