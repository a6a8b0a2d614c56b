"""Routing on a real Redis: training goes to `gpu` only, ingestion to `ingest` only."""

from __future__ import annotations

import secrets

import pytest
import redis

from hilum.queue import GPU_QUEUE, INGEST_QUEUE, INGEST_TASK, TRAIN_TASK, make_celery
from hilum.settings import Settings

URL = "redis://127.0.0.1:6379/15"


@pytest.mark.parametrize(("task", "queue"), [(TRAIN_TASK, GPU_QUEUE), (INGEST_TASK, INGEST_QUEUE)])
def test_each_task_lands_on_its_own_queue_only(redis_available: None, task: str, queue: str) -> None:
    prefix = f"hilum-test-{secrets.token_hex(4)}:"
    app = make_celery(Settings(_env_file=None, redis_url=URL, broker_key_prefix=prefix))
    client = redis.Redis.from_url(URL)
    try:
        with app.connection_for_write() as conn:  # bind both queues, as a worker consuming both does
            for q in app.conf.task_queues:
                q(conn.default_channel).declare()
        app.send_task(task, args=["some-id"])
        lengths = {name: client.llen(prefix + name) for name in (GPU_QUEUE, INGEST_QUEUE)}
        assert lengths == {GPU_QUEUE: int(queue == GPU_QUEUE), INGEST_QUEUE: int(queue == INGEST_QUEUE)}
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


def test_unknown_queues_are_not_created() -> None:
    app = make_celery(Settings(_env_file=None, redis_url=URL))
    assert app.conf.task_create_missing_queues is False
    assert {q.name for q in app.conf.task_queues} == {GPU_QUEUE, INGEST_QUEUE}
