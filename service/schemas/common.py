"""What every schema shares: UTC timestamps and the one error body.

Timestamps: every datetime the API returns is UTC with an explicit offset, written ``...Z``
(``2026-01-31T09:15:00.123456Z``). SQLite hands naive datetimes back; they were stored as UTC,
so a naive value is taken as UTC. A timestamp sent in a request may carry any offset; it is
converted to UTC (a naive one is taken as UTC).

Errors: every 4xx/5xx body is ``{"detail": "<one readable sentence>"}``; ``detail`` is always a
string. A request that fails validation (422) also carries ``errors``: the list of field errors
(``loc``, ``msg``, ``type``) that ``detail`` summarises.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, PlainSerializer, WithJsonSchema


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken as UTC (SQLite stores UTC without a zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(iso_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "UTC, e.g. 2026-01-31T09:15:00Z"}),
]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str
    errors: list[FieldError] | None = None


_DESCRIPTIONS = {
    400: "bad request",
    401: "missing, invalid, revoked or expired API key",
    403: "the key's role may not do this",
    404: "not found",
    409: "conflicts with the current state",
    413: "request body over this route's limit",
    415: "wrong content type",
    422: "invalid request (validation errors in `errors`)",
    429: "rate limit reached (see Retry-After)",
    503: "a dependency is unavailable; try again later",
}

# Documented on every /v1 route (app.include_router(..., responses=ERROR_RESPONSES)).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _DESCRIPTIONS.items()
}

# Integers that reach an INTEGER column (version numbers) stay within its range: a larger one is a 422,
# never a database error.
MAX_DB_INT = 2**31 - 1
VersionPath = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="a version number (1, 2, ...)")]
