"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hilum import __version__
from hilum.db import session_scope
from hilum.keys import ensure_bootstrap_admin
from hilum.migrate import upgrade_to_head
from hilum.queue import make_celery
from hilum.settings import Settings, get_settings
from hilum.storage import Storage
from service.batcher import MicroBatcher
from service.errors import ServiceError
from service.model_cache import ModelCache
from service.routes import datasets, health, jobs, keys, models, predictions, weights

log = logging.getLogger("hilum.api")

DESCRIPTION = """
Hilum turns a hospital's labelled chest X-rays into a pneumonia classifier it can query.

Every `/v1` endpoint needs `Authorization: Bearer <key>`. Roles: **admin** (everything, keys),
**staff** (datasets, training jobs, models), **clinician** (models and predictions).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database is migrated and an admin key ensured at start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        Storage(settings.data_dir).ensure()
        upgrade_to_head(settings.resolved_database_url)
        with session_scope(settings.resolved_database_url) as session:
            generated = ensure_bootstrap_admin(session, settings.bootstrap_admin_key)
        if generated:
            log.warning("generated an admin API key (shown once): %s", generated)
        yield

    app = FastAPI(title="Hilum", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    app.state.model_cache = ModelCache(max_models=settings.model_cache_size, max_bytes=settings.model_cache_mb * 2**20)
    app.state.batcher = MicroBatcher(
        max_batch=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        enabled=settings.micro_batching,
    )

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.message})

    for module in (health, keys, datasets, jobs, models, predictions, weights):
        app.include_router(module.router)
    return app
