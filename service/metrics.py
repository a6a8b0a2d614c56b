"""Prometheus metrics of the API process, and the middleware that measures and logs every request.

Counters and histograms live in prometheus_client's default registry (one API process: one set); the state
collector (queue depth, jobs and datasets by status, model cache, GPU memory) is built per app.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hilum.db import session_scope
from hilum.logs import bind_context, clear_context
from hilum.queue import GPU_QUEUE, INGEST_QUEUE
from hilum.settings import Settings
from hilum.tables import Dataset, Job

log = logging.getLogger("hilum.api.access")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter("hilum_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "hilum_http_request_duration_seconds",
    "time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter("hilum_predictions_total", "predictions answered", ["model", "version", "label"])
BATCH_SIZE = Histogram(
    "hilum_batch_size", "images per micro-batch forward pass", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_WAIT = Histogram(
    "hilum_batch_queue_wait_seconds",
    "time a prediction waited for its micro-batch to start",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
MODEL_CACHE_EVENTS = Counter("hilum_model_cache_events_total", "model cache hits, loads and evictions", ["event"])
RATE_LIMITED = Counter("hilum_rate_limited_total", "requests refused with 429", ["route_class"])

GPU_METRICS = ("hilum_gpu_memory_allocated_bytes", "hilum_gpu_memory_reserved_bytes", "hilum_gpu_memory_total_bytes")
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: access lines at DEBUG
UNMATCHED_ROUTE = "unmatched"  # 404s keep one series: scanners never explode the label set
# Kombu's Redis transport keeps a list per priority step of a queue (0 has the plain name).
_PRIORITY_SEPARATOR, _PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


def observe_prediction(model: str, version: int | str, label: str | None) -> None:
    """Count one answered prediction (call where predictions are recorded)."""
    PREDICTIONS.labels(model, str(version), label if label is not None else "withheld").inc()


def observe_batch(size: int, waits_s: Iterable[float]) -> None:
    """One micro-batch forward pass of ``size`` images whose requests waited ``waits_s``."""
    BATCH_SIZE.observe(size)
    for wait in waits_s:
        BATCH_WAIT.observe(max(0.0, wait))


def observe_cache(event: str, count: int = 1) -> None:
    """``hit``, ``load`` or ``eviction`` in the model cache."""
    if count:
        MODEL_CACHE_EVENTS.labels(event).inc(count)


class RequestMiddleware:
    """Request id (from ``X-Request-ID`` or new; returned), one access log line, HTTP metrics per route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        clear_context()
        bind_context(request_id=request_id)
        status = [500]
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, route, str(status[0])).inc()
            HTTP_LATENCY.labels(method, route, str(status[0])).observe(seconds)
            log.log(
                logging.DEBUG if route in QUIET_ROUTES and status[0] < 400 else logging.INFO,
                "request",
                extra={"method": method, "route": route, "status": status[0], "ms": round(seconds * 1e3, 2)},
            )
            clear_context()


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID_OK.match(candidate):
                return candidate
    return uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED_ROUTE


class StateCollector(Collector):
    """Gauges read at scrape time: queue depth (Redis), jobs and datasets by status (cached), model cache."""

    def __init__(self, settings: Settings, cache_stats: Callable[[], tuple[int, int]]) -> None:
        self.settings = settings
        self.cache_stats = cache_stats
        self._db_counts: tuple[float, dict[str, dict[str, int]]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("hilum_queue_depth", "messages waiting on a Celery queue", labels=["queue"])
        for queue, count in self.queue_depths().items():
            depth.add_metric([queue], count)
        yield depth
        counts = self.db_counts()
        for name, table in (("jobs", "jobs"), ("datasets", "datasets")):
            family = GaugeMetricFamily(f"hilum_{name}", f"{name} by status", labels=["status"])
            for status, count in sorted(counts.get(table, {}).items()):
                family.add_metric([status], count)
            yield family
        models, size = self.cache_stats()
        yield GaugeMetricFamily("hilum_model_cache_models", "models loaded in this API process", value=models)
        yield GaugeMetricFamily("hilum_model_cache_bytes", "bytes held by the loaded models", value=size)
        yield from gpu_memory_metrics()

    def queue_depths(self) -> dict[str, int]:
        if not self.settings.redis_url:
            return {}
        prefix = self.settings.broker_key_prefix
        try:
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
            with client.pipeline() as pipe:
                for queue in (GPU_QUEUE, INGEST_QUEUE):
                    for name in (queue, *(f"{queue}{_PRIORITY_SEPARATOR}{p}" for p in _PRIORITY_STEPS)):
                        pipe.llen(prefix + name)
                lengths = pipe.execute()
        except redis.RedisError as exc:
            log.warning("queue depth unavailable: %s", type(exc).__name__)
            return {}
        steps = 1 + len(_PRIORITY_STEPS)
        return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate((GPU_QUEUE, INGEST_QUEUE))}

    def db_counts(self) -> dict[str, dict[str, int]]:
        now = time.monotonic()
        if self._db_counts and now - self._db_counts[0] < self.settings.metrics_db_cache_s:
            return self._db_counts[1]
        counts: dict[str, dict[str, int]] = {}
        try:
            with session_scope(self.settings.resolved_database_url) as session:
                for table, model in (("jobs", Job), ("datasets", Dataset)):
                    rows = session.execute(select(model.status, func.count()).group_by(model.status))
                    counts[table] = {str(status): int(n) for status, n in rows}
        except Exception as exc:  # a scrape never fails on the database; the gauges go missing instead
            log.warning("job/dataset counts unavailable: %s", type(exc).__name__)
            return {}
        self._db_counts = (now, counts)
        return counts


def gpu_memory_metrics() -> Iterator[GaugeMetricFamily]:
    """This process's CUDA memory, when it has used CUDA (never initialises it)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    allocated, reserved, total = (
        GaugeMetricFamily(name, f"CUDA memory {what}", labels=["device"])
        for name, what in zip(GPU_METRICS, ("allocated", "reserved", "of the device"), strict=True)
    )
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        allocated.add_metric([device], torch.cuda.memory_allocated(index))
        reserved.add_metric([device], torch.cuda.memory_reserved(index))
        total.add_metric([device], torch.cuda.get_device_properties(index).total_memory)
    yield from (allocated, reserved, total)


def app_registry(settings: Settings, cache_stats: Callable[[], tuple[int, int]]) -> CollectorRegistry:
    """The per-app registry holding the state collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(settings, cache_stats))
    return registry


def render(state: CollectorRegistry) -> bytes:
    """The exposition text: process-wide counters and histograms, then this app's state gauges."""
    return generate_latest(REGISTRY) + generate_latest(state)


def metric_names(registries: Iterable[Any] = (REGISTRY,)) -> set[str]:
    """Names of the series the registries export (sample names, e.g. ``..._bucket``)."""
    return {s.name for r in registries for m in r.collect() for s in m.samples}
