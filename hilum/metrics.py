"""Prometheus metrics of the Celery workers: training throughput and epoch time, tasks, heartbeats, GPU memory.

A worker runs each job in a fresh child process (``worker_max_tasks_per_child=1``), so the workers use
prometheus_client's multiprocess mode: ``prepare_multiprocess_dir`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
folder before this module (and so prometheus_client) is imported, children write their values there, and the
worker's main process serves them all on ``HILUM_WORKER_METRICS_PORT`` (``start_worker_metrics_server``).

Without a port, the metrics below still work (in-process, unexported): nothing else changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hilum.settings import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by worker.observability before this import
PORT_ATTEMPTS = 16  # several workers on one host: the first free port from HILUM_WORKER_METRICS_PORT on
HEARTBEAT_EVERY_S = 5.0


TRAINING_THROUGHPUT = Gauge(
    "hilum_training_throughput_images_per_second",
    "training images per second over the last finished epoch",
    ["backbone"],
    multiprocess_mode="mostrecent",
)
TRAINING_EPOCH_SECONDS = Histogram(
    "hilum_training_epoch_seconds",
    "wall time of one training epoch, validation included",
    ["backbone"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200),
)
TRAINING_GPU_PEAK = Gauge(
    "hilum_training_gpu_memory_peak_bytes",
    "peak GPU memory allocated by the running training job",
    ["worker"],
    multiprocess_mode="mostrecent",
)
WORKER_TASKS = Counter("hilum_worker_tasks_total", "tasks a worker ran, by outcome", ["task", "outcome"])
WORKER_HEARTBEAT = Gauge(
    "hilum_worker_heartbeat_timestamp_seconds",
    "unix time of the worker's latest heartbeat (alert when it stops moving)",
    ["worker"],
    multiprocess_mode="max",
)
WORKER_TASK_RUNNING = Gauge(
    "hilum_worker_task_running",
    "1 while the worker process runs a task",
    ["worker", "task"],
    multiprocess_mode="livesum",
)


def training_observer(on_progress: Callable[[dict[str, Any]], None], *, backbone: str) -> Callable[[dict], None]:
    """Wrap a training progress callback: epoch ends (events with validation metrics) feed the metrics."""
    last_epoch_end = [time.monotonic()]

    def observe(event: dict[str, Any]) -> None:
        if event.get("phase") == "training" and event.get("val"):
            now = time.monotonic()
            TRAINING_EPOCH_SECONDS.labels(backbone).observe(now - last_epoch_end[0])
            last_epoch_end[0] = now
            rate = event.get("throughput_img_s")
            if rate:
                TRAINING_THROUGHPUT.labels(backbone).set(float(rate))
            peak_mb = event.get("gpu_peak_mem_mb")
            if peak_mb is not None:
                TRAINING_GPU_PEAK.labels(_worker_name()).set(float(peak_mb) * 2**20)
        on_progress(event)

    return observe


def _worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def start_worker_metrics_server(settings: Settings, worker: str) -> int | None:
    """Serve every process's metrics from the worker's main process; beat ``WORKER_HEARTBEAT``. The port used."""
    folder = os.environ.get(MULTIPROC_ENV)
    if settings.worker_metrics_port is None or not folder:
        return None
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    for port in range(settings.worker_metrics_port, settings.worker_metrics_port + PORT_ATTEMPTS):
        try:
            start_http_server(port, registry=registry)
        except OSError:
            continue
        log.info("worker metrics on port %d", port)
        _start_heartbeat(worker)
        return port
    log.warning("no free metrics port from %d on: this worker exports no metrics", settings.worker_metrics_port)
    return None


def _start_heartbeat(worker: str) -> None:
    def beat() -> None:
        while True:
            WORKER_HEARTBEAT.labels(worker).set(time.time())
            time.sleep(HEARTBEAT_EVERY_S)

    threading.Thread(target=beat, name="hilum-metrics-heartbeat", daemon=True).start()
