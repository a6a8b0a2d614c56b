"""The reconciler over a real database and a real Redis: what it re-queues, what it leaves, and the lock."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from hilum.db import session_scope
from hilum.migrate import upgrade_to_head
from hilum.queue import GPU_QUEUE, INGEST_TASK, TRAIN_TASK, make_celery
from hilum.recovery import LOCK_KEY, UNACKED, UNACKED_INDEX, message_target, messages_present, reconcile
from hilum.settings import Settings
from hilum.tables import Dataset, Job, utcnow
from tests.conftest import REDIS_HOST

REDIS_URL = f"{REDIS_HOST}/13"


@pytest.fixture
def settings(tmp_path: Path, redis_available: None) -> Iterator[Settings]:
    prefix = f"hilum-recovery-{secrets.token_hex(4)}:"
    s = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        redis_url=REDIS_URL,
        broker_key_prefix=prefix,
        job_lease_s=30,
    )
    upgrade_to_head(s.resolved_database_url)
    yield s
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def ago(seconds: float):  # type: ignore[no-untyped-def]
    return utcnow() - timedelta(seconds=seconds)


def queued_targets(settings: Settings) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(REDIS_URL)
    out = []
    for queue in ("gpu", "ingest"):
        out += [message_target(raw) for raw in client.lrange(settings.broker_key_prefix + queue, 0, -1)]
    return sorted(t for t in out if t)


def test_lost_work_is_requeued_once_and_live_or_finished_work_is_left_alone(settings: Settings) -> None:
    celery = make_celery(settings)
    url = settings.resolved_database_url
    with session_scope(url) as s:
        s.add(Dataset(id="ds", name="d", status="ready", created_at=ago(600)))
        rows = {
            "lost-queued": ("queued", None),  # its message is gone (a broker without persistence)
            "waiting": ("queued", None),  # its message waits in the queue behind another job
            "held": ("running", ago(5)),  # a live worker renews its lease
            "orphan": ("running", ago(300)),  # its worker was killed; the message sits unacknowledged
            "done": ("succeeded", ago(300)),
        }
        for job_id, (status, beat) in rows.items():
            s.add(Job(id=job_id, dataset_id="ds", status=status, spec={}, model_name="m", heartbeat_at=beat))
            s.flush()
            s.get(Job, job_id).created_at = ago(600)
        s.add(Job(id="new", dataset_id="ds", status="queued", spec={}, model_name="m"))  # its API is sending it
        s.add(Dataset(id="ingest-lost", name="d", status="ingesting", created_at=ago(600)))
        s.add(Dataset(id="ingest-dead", name="d", status="ingesting", created_at=ago(600), heartbeat_at=ago(300)))
        s.add(Dataset(id="ingest-live", name="d", status="ingesting", created_at=ago(600), heartbeat_at=ago(2)))
    celery.send_task(TRAIN_TASK, args=["waiting"])
    # The killed worker's message: handed out 300 s ago, never acknowledged (kombu's bookkeeping).
    client = redis.Redis.from_url(REDIS_URL)
    p = settings.broker_key_prefix
    celery.send_task(TRAIN_TASK, args=["orphan"])
    raw = client.lpop(p + GPU_QUEUE)
    assert raw is not None and message_target(raw) == (TRAIN_TASK, "orphan")
    client.hset(p + UNACKED, "tag-1", json.dumps([json.loads(raw), GPU_QUEUE, GPU_QUEUE]))
    client.zadd(p + UNACKED_INDEX, {"tag-1": time.time() - 300})
    assert messages_present(client, p, fresh_s=30, now=time.time()) == {(TRAIN_TASK, "waiting")}

    first = reconcile(settings, celery)
    assert sorted(first.jobs) == ["lost-queued", "orphan"]
    assert sorted(first.datasets) == ["ingest-dead", "ingest-lost"]
    assert queued_targets(settings) == sorted(
        [
            (INGEST_TASK, "ingest-dead"),
            (INGEST_TASK, "ingest-lost"),
            (TRAIN_TASK, "lost-queued"),
            (TRAIN_TASK, "orphan"),
            (TRAIN_TASK, "waiting"),
        ]
    )
    # Idempotent: their messages now wait in the queue, so the next pass sends nothing.
    second = reconcile(settings, celery)
    assert (second.jobs, second.datasets, second.skipped) == ([], [], False)


def test_a_message_handed_to_a_live_worker_counts_as_present(settings: Settings) -> None:
    celery = make_celery(settings)
    client = redis.Redis.from_url(REDIS_URL)
    p = settings.broker_key_prefix
    celery.send_task(TRAIN_TASK, args=["j"])
    raw = client.lpop(p + GPU_QUEUE)
    assert raw is not None
    client.hset(p + UNACKED, "t", json.dumps([json.loads(raw), GPU_QUEUE, GPU_QUEUE]))
    client.zadd(p + UNACKED_INDEX, {"t": time.time() - 1})
    assert messages_present(client, p, fresh_s=30, now=time.time()) == {(TRAIN_TASK, "j")}
    assert messages_present(client, p, fresh_s=0.5, now=time.time()) == set()


def test_one_pass_at_a_time_across_processes(settings: Settings) -> None:
    celery = make_celery(settings)
    with session_scope(settings.resolved_database_url) as s:
        s.add(Dataset(id="ds", name="d", status="ready"))
        s.add(Job(id="j", dataset_id="ds", status="queued", spec={}, model_name="m", created_at=ago(600)))
    client = redis.Redis.from_url(REDIS_URL)
    client.set(settings.broker_key_prefix + LOCK_KEY, "another-process", ex=60)
    assert reconcile(settings, celery).skipped
    assert queued_targets(settings) == []
    client.delete(settings.broker_key_prefix + LOCK_KEY)
    assert reconcile(settings, celery).jobs == ["j"]
    assert not client.exists(settings.broker_key_prefix + LOCK_KEY)  # released after the pass


@pytest.mark.parametrize("retention_hours", [0.0, 1.0])
def test_uploads_are_swept_after_ingestion_and_retention(settings: Settings, retention_hours: float) -> None:
    settings = settings.model_copy(update={"upload_retention_hours": retention_hours})
    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True)
    with session_scope(settings.resolved_database_url) as s:
        for dataset_id, status in (("old-ready", "ready"), ("old-failed", "failed"), ("busy", "ingesting")):
            s.add(Dataset(id=dataset_id, name="d", status=status, heartbeat_at=utcnow()))
        s.add(Dataset(id="new-ready", name="d", status="ready"))
    two_hours_ago = time.time() - 7200
    for name in ("old-ready", "old-failed", "busy", "abandoned"):
        (uploads / f"{name}.zip").write_bytes(b"PK")
        os.utime(uploads / f"{name}.zip", (two_hours_ago, two_hours_ago))
    (uploads / "new-ready.zip").write_bytes(b"PK")
    done = reconcile(settings, make_celery(settings))
    expected = ["old-failed", "old-ready"] if retention_hours else ["new-ready", "old-failed", "old-ready"]
    assert done.uploads_deleted == expected
    left = sorted(p.stem for p in uploads.glob("*.zip"))
    assert "busy" in left and "abandoned" in left  # ingestion still runs; an unknown upload waits a day


def test_ingestion_releases_its_upload_unless_a_retention_period_is_set(settings: Settings) -> None:
    from hilum.storage import Storage
    from worker.ingestion import release_upload

    storage = Storage(settings.data_dir).ensure()
    storage.upload_path("d").write_bytes(b"PK")
    release_upload(settings.model_copy(update={"upload_retention_hours": 1.0}), storage, "d")
    assert storage.upload_path("d").exists()  # the sweep deletes it once the hour has passed
    release_upload(settings, storage, "d")
    assert not storage.upload_path("d").exists()
