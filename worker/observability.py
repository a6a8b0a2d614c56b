"""Celery signal handlers: JSON/console logs with the job or dataset id bound, and the worker's metrics.

Imported by ``worker.celery_app``. prometheus_client is imported (with the task modules) only after
``import_modules`` has set up its multiprocess folder (see ``hilum.metrics``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from celery import signals

from hilum.logs import bind_context, clear_context, configure_logging
from hilum.queue import INGEST_TASK, TRAIN_TASK
from hilum.settings import get_settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The id each task carries, bound into every log line the task writes.
TASK_ID_FIELD = {TRAIN_TASK: "job_id", INGEST_TASK: "dataset_id"}


def prepare_multiprocess_dir() -> str | None:
    """A fresh metrics folder for this worker and its children (None without ``HILUM_WORKER_METRICS_PORT``)."""
    settings = get_settings()
    if settings.worker_metrics_port is None or "hilum-worker-metrics-" in os.environ.get(MULTIPROC_ENV, ""):
        return None
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client was imported before the worker set up metrics: child metrics are lost")
    folder = tempfile.mkdtemp(prefix="hilum-worker-metrics-")
    os.environ[MULTIPROC_ENV] = folder  # read by prometheus_client at import, here and in children
    return folder


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:  # connected: Celery leaves the root logger to us
    configure_logging(get_settings(), process="worker")


@signals.import_modules.connect
def _before_task_imports(**_: Any) -> None:  # the worker, before it imports the task modules (and forks)
    prepare_multiprocess_dir()


@signals.worker_shutdown.connect
def _worker_shutdown(**_: Any) -> None:  # the main process only (children exit without this signal)
    folder = os.environ.get(MULTIPROC_ENV, "")
    if get_settings().worker_metrics_port is not None and "hilum-worker-metrics-" in folder:
        shutil.rmtree(folder, ignore_errors=True)


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    from hilum.metrics import start_worker_metrics_server

    start_worker_metrics_server(get_settings(), getattr(sender, "hostname", None) or "worker")


@signals.task_prerun.connect
def _task_prerun(task: Any = None, task_id: str | None = None, args: Any = None, **_: Any) -> None:
    from hilum.metrics import WORKER_HEARTBEAT, WORKER_TASK_RUNNING

    clear_context()
    name = getattr(task, "name", "")
    fields: dict[str, Any] = {"task": name, "task_id": task_id}
    if name in TASK_ID_FIELD and args:
        fields[TASK_ID_FIELD[name]] = args[0]
    bind_context(**fields)
    worker = _hostname(task)
    WORKER_TASK_RUNNING.labels(worker, name).set(1)
    WORKER_HEARTBEAT.labels(worker).set_to_current_time()


@signals.task_postrun.connect
def _task_postrun(task: Any = None, state: str | None = None, **_: Any) -> None:
    from hilum.metrics import WORKER_TASK_RUNNING, WORKER_TASKS

    name = getattr(task, "name", "")
    WORKER_TASKS.labels(name, (state or "unknown").lower()).inc()
    WORKER_TASK_RUNNING.labels(_hostname(task), name).set(0)
    clear_context()


def _hostname(task: Any) -> str:
    return str(getattr(getattr(task, "request", None), "hostname", None) or "worker")
