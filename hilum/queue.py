"""The Celery application, configured from settings; shared by the API (to enqueue)
and the worker (to consume). Queues are explicit: training on ``gpu``, ingestion on ``ingest``."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from hilum.settings import Settings

TRAIN_TASK = "hilum.train"
INGEST_TASK = "hilum.ingest"
GPU_QUEUE = "gpu"
INGEST_QUEUE = "ingest"


class BrokerNotConfigured(RuntimeError):
    pass


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app. Long jobs: late acks, one message prefetched, requeue on worker loss."""
    if not settings.redis_url:
        raise BrokerNotConfigured(
            "REDIS_URL is not set: start Hilum with `hilum run` (embedded Redis) or point REDIS_URL at Redis"
        )
    app = Celery("hilum", broker=settings.redis_url)
    app.conf.update(
        # each queue its own direct exchange: a training message must never also land on `ingest`
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in (GPU_QUEUE, INGEST_QUEUE)
        ],
        task_create_missing_queues=False,
        task_default_queue=INGEST_QUEUE,
        task_routes={TRAIN_TASK: {"queue": GPU_QUEUE}, INGEST_TASK: {"queue": INGEST_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,  # job state lives in the database
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,  # a fresh process per job returns GPU memory to the driver
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # sweep for messages of dead workers every interval (kombu's default scans every 10th)
            "unacked_restore_interval": settings.broker_restore_interval_s,
            "unacked_restore_throttle": 1,
            **({"global_keyprefix": settings.broker_key_prefix} if settings.broker_key_prefix else {}),
        },
    )
    return app
