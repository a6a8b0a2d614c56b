"""Liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics (``/metrics``); no key needed."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from celery import Celery
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from hilum.db import get_engine
from hilum.queue import GPU_QUEUE, INGEST_QUEUE
from hilum.settings import Settings
from service.deps import CeleryDep, SettingsDep
from service.metrics import render

router = APIRouter(tags=["health"])

QUEUES = (GPU_QUEUE, INGEST_QUEUE)


@router.get("/healthz", summary="Liveness and dependency check (no key needed)")
def healthz(settings: SettingsDep, celery: CeleryDep) -> dict[str, str]:
    checks = {"status": "ok", "database": "ok", "broker": "ok"}
    if not database_ok(settings):
        checks["database"] = checks["status"] = "unavailable"
    if not broker_ok(celery):
        checks["broker"] = checks["status"] = "unavailable"
    return checks


@router.get(
    "/readyz",
    summary="Readiness: database, broker, a worker on each queue, free disk (503 naming what failed)",
    responses={503: {"description": "not ready; `failed` names the failing checks"}},
)
def readyz(request: Request, settings: SettingsDep, celery: CeleryDep) -> JSONResponse:
    checks: dict[str, Any] = {"database": "ok" if database_ok(settings) else "unavailable"}
    broker = broker_ok(celery)
    checks["broker"] = "ok" if broker else "unavailable"
    consumers = worker_queues(request.app.state, celery, settings) if broker else {}
    for queue in QUEUES:
        workers = consumers.get(queue, [])
        checks[f"queue:{queue}"] = f"ok ({len(workers)} worker{'s' * (len(workers) != 1)})" if workers else "no worker"
    free_mb = shutil.disk_usage(settings.data_dir).free // 2**20 if settings.data_dir.exists() else 0
    checks["disk"] = (
        f"ok ({free_mb} MB free)"
        if free_mb >= settings.ready_min_free_mb
        else f"{free_mb} MB free in the data dir, below HILUM_READY_MIN_FREE_MB={settings.ready_min_free_mb}"
    )
    failed = [name for name, value in checks.items() if not value.startswith("ok")]
    body = {"status": "unready" if failed else "ready", "failed": failed, "checks": checks}
    return JSONResponse(body, status_code=503 if failed else 200)


@router.get("/metrics", summary="Prometheus metrics of this API process", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(render(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def database_ok(settings: Settings) -> bool:
    try:
        with get_engine(settings.resolved_database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def broker_ok(celery: Celery) -> bool:
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        return False
    return True


_inspect_lock = threading.Lock()


def worker_queues(state: Any, celery: Celery, settings: Settings) -> dict[str, list[str]]:
    """Queue -> the workers consuming it, from Celery's ``active_queues``; one answer kept ``ready_cache_s``."""
    with _inspect_lock:
        cached = getattr(state, "ready_workers", None)
        if cached and time.monotonic() - cached[0] < settings.ready_cache_s:
            return cached[1]
        consumers: dict[str, list[str]] = {}
        try:
            replies = celery.control.inspect(timeout=settings.ready_worker_timeout_s).active_queues() or {}
        except Exception:
            replies = {}
        for worker, queues in replies.items():
            for queue in queues or []:
                consumers.setdefault(str(queue.get("name")), []).append(worker)
        state.ready_workers = (time.monotonic(), consumers)
        return consumers
