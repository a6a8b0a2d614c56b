"""Web app sign-in sessions: an API key exchanged for a cookie token; only the token's hash is stored.

The CSRF token is derived from the session token (never stored), so a page can ask for it again after a
reload and a cross-site page, which cannot read the cookie, cannot forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from hilum.keys import find_active_key, key_is_active
from hilum.tables import ApiKey, WebSession

COOKIE_NAME = "hilum_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The CSRF token that goes with a session token."""
    return hashlib.sha256(b"hilum-csrf:" + token.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite returns naive datetimes


def sign_in(session: Session, plain_key: str, *, ttl_s: int) -> tuple[ApiKey, str, datetime] | None:
    """Exchange a valid API key for a new session; returns (key row, session token, expiry), None if invalid."""
    key = find_active_key(session, plain_key)
    if key is None:
        return None
    now = datetime.now(UTC)
    session.execute(delete(WebSession).where(WebSession.expires_at < now))  # keep the table small
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=ttl_s)
    session.add(WebSession(token_hash=_hash(token), key_id=key.id, expires_at=expires))
    session.flush()
    return key, token, expires


def find_session(session: Session, token: str | None) -> tuple[ApiKey, WebSession] | None:
    """The key behind a session token if the session is unexpired and its key still active, else None."""
    if not token:
        return None
    row = session.get(WebSession, _hash(token))
    if row is None or datetime.now(UTC) >= _aware(row.expires_at):
        return None
    key = session.get(ApiKey, row.key_id)
    if key is None or not key_is_active(key):
        return None
    return key, row


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))


def csrf_ok(method: str, token: str, headers: Mapping[str, str]) -> bool:
    """Whether a cookie-authenticated request may go ahead: safe methods always, others with the CSRF header."""
    if method.upper() in SAFE_METHODS:
        return True
    sent = headers.get(CSRF_HEADER) or ""
    return hmac.compare_digest(sent, csrf_token(token))


def principal_from_cookie(
    session: Session, *, method: str, cookies: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[ApiKey | None, int, str]:
    """The one cookie check the API and the guard share: (key, 200, "") or (None, 401 or 403, why)."""
    token = cookies.get(COOKIE_NAME)
    found = find_session(session, token)
    if token is None or found is None:
        return None, 401, "your web session has expired or was signed out: sign in again"
    if not csrf_ok(method, token, headers):
        return None, 403, "missing or wrong X-CSRF-Token header for a cookie-authenticated request"
    return found[0], 200, ""


def has_session_cookie(cookies: Mapping[str, str]) -> bool:
    return bool(cookies.get(COOKIE_NAME))


__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "csrf_ok",
    "csrf_token",
    "find_session",
    "has_session_cookie",
    "principal_from_cookie",
    "sign_in",
    "sign_out",
]
