from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from hilum.db import get_engine
from service.deps import CeleryDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and dependency check (no key needed)")
def healthz(settings: SettingsDep, celery: CeleryDep) -> dict[str, str]:
    checks = {"status": "ok", "database": "ok", "broker": "ok"}
    try:
        with get_engine(settings.resolved_database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        checks["database"] = checks["status"] = "unavailable"
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        checks["broker"] = checks["status"] = "unavailable"
    return checks
