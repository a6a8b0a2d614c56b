"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hilum import __version__
from hilum.db import session_scope
from hilum.keys import ensure_bootstrap_admin
from hilum.logs import configure_logging
from hilum.migrate import upgrade_to_head
from hilum.queue import make_celery
from hilum.recovery import recovery_loop
from hilum.settings import Settings, get_settings
from hilum.storage import Storage
from models.device import DeviceInfo, default_batch_size, device_info, resolve_device, resolve_precision
from pipelines.imaging import configure_decoding
from service.batcher import MicroBatcher
from service.errors import install_error_handlers
from service.guard import RequestGuard
from service.metrics import RequestMiddleware, app_registry
from service.model_cache import ModelCache
from service.ratelimit import RateLimiter, RateLimitMiddleware
from service.routes import audit, datasets, docs, health, jobs, keys, models, predictions, preview, sweeps, weights
from service.schemas.common import ERROR_RESPONSES
from service.web import routes as web_routes

log = logging.getLogger("hilum.api")

DESCRIPTION = """
Hilum turns a hospital's labelled chest X-rays into a pneumonia classifier it can query.

Every `/v1` endpoint needs `Authorization: Bearer <key>`. Roles: **admin** (everything, keys),
**staff** (datasets, training jobs, models), **clinician** (models and predictions).
"""


def serving_device(settings: Settings) -> DeviceInfo:
    """Where this API process runs its models (``HILUM_SERVING_DEVICE``, ``HILUM_SERVING_PRECISION``)."""
    device = resolve_device(settings.serving_device)
    return device_info(device, resolve_precision(device, settings.serving_precision))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database is migrated and an admin key ensured at start-up."""
    settings = settings or get_settings()
    configure_logging(settings, process="api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        Storage(settings.data_dir).ensure()
        upgrade_to_head(settings.resolved_database_url)
        with session_scope(settings.resolved_database_url) as session:
            generated = ensure_bootstrap_admin(session, settings.bootstrap_admin_key)
        if generated:  # never into the logs (they are shipped elsewhere): into a file only its owner can read
            key_file = settings.data_dir / "initial-admin-key"
            key_file.touch(mode=0o600)
            key_file.write_text(generated + "\n")
            log.warning("generated an admin API key: it is in %s (readable by this user only); delete it", key_file)
        log.warning(
            "models run on %s; micro-batching %s (up to %d)",
            serving.describe(),
            "on" if settings.micro_batching else "off",
            app.state.batcher.max_batch,
        )
        recovery = asyncio.create_task(recovery_loop(settings, app.state.celery))  # re-queues lost work
        yield
        recovery.cancel()

    app = FastAPI(
        title="Hilum", version=__version__, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    # Issue 11: pixels per image refused from the header, and how many images this process decodes at once.
    configure_decoding(max_pixels=settings.max_image_pixels, max_concurrent=settings.decode_concurrency)
    app.state.celery = make_celery(settings)
    serving = serving_device(settings)
    app.state.serving_device = serving
    app.state.model_cache = ModelCache(
        max_models=settings.model_cache_size,
        max_bytes=settings.model_cache_mb * 2**20,
        device=str(serving.device),
        precision=settings.serving_precision,
        max_gpu_bytes=int(serving.total_bytes * settings.model_cache_gpu_fraction) if serving.total_bytes else None,
    )
    app.state.batcher = MicroBatcher(
        max_batch=settings.batch_max_size or default_batch_size(serving.device),
        max_wait_ms=settings.batch_max_wait_ms,
        enabled=settings.micro_batching,
    )

    # Innermost of the middlewares: the key and a body cap before any route reads a body (issue 11).
    app.add_middleware(RequestGuard, settings=settings)
    # Issue 13: per-key rate limits (before the guard reads a body), then the outermost request id/metrics/log.
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(settings))
    app.add_middleware(RequestMiddleware)
    cache = app.state.model_cache
    app.state.metrics_registry = app_registry(settings, lambda: (len(cache), cache.total_bytes))

    install_error_handlers(app)  # every error body is {"detail": str} (service/schemas/common.py)

    app.include_router(health.router)
    for module in (keys, audit, datasets, jobs, sweeps, models, predictions, weights):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    docs.install(app)  # /docs and /redoc from assets in the package: they work offline
    # the web app (issue 10): its film preview, sign-in, pages, assets
    app.include_router(preview.router, responses=ERROR_RESPONSES)
    app.include_router(web_routes.router, responses=ERROR_RESPONSES)
    app.mount("/web/static", StaticFiles(directory=web_routes.STATIC_DIR), name="web-static")
    return app
