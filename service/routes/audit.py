"""The audit log of admin actions (admin): filters, JSON or CSV (``?format=csv`` or ``Accept: text/csv``)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from hilum.audit import list_audit
from service.deps import AdminPrincipal, SessionDep
from service.schemas.audit import AuditEventPublic

router = APIRouter(prefix="/v1/audit", tags=["audit"])

CSV_COLUMNS = ("id", "created_at", "actor", "action", "target", "details")


@router.get(
    "",
    response_model=list[AuditEventPublic],
    summary="Audit log of admin actions (keys, weights, alias and threshold moves), newest first",
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"}},
)
def audit_log(
    request: Request,
    session: SessionDep,
    _: AdminPrincipal,
    actor: str | None = Query(None, description="acting key id"),
    action: str | None = Query(None, description="exact action, or a prefix ending in '.' (e.g. key.)"),
    target: str | None = Query(None, examples=["key:3f2a..."]),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(1000, ge=1, le=100_000),
    format: Literal["json", "csv"] | None = None,
) -> list[AuditEventPublic] | Response:
    rows = list_audit(session, actor=actor, action=action, target=target, since=since, until=until, limit=limit)
    events = [AuditEventPublic.model_validate(r) for r in rows]
    wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    if not wants_csv:
        return events
    return Response(
        to_csv(events),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="hilum-audit.csv"'},
    )


def to_csv(events: list[AuditEventPublic]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in events:
        writer.writerow(
            [e.id, e.created_at.isoformat(), e.actor or "", e.action, e.target, json.dumps(e.details, sort_keys=True)]
        )
    return out.getvalue()
