"""Put lost work back on its queue: the database says what should run, the broker what will.

After a kill -9 (of a worker, or of the whole stack) the database can hold work that no message will
ever start: a queued job whose message was lost, a running job whose worker died (its message waits
unacknowledged for the broker's visibility timeout, an hour by default), a dataset left ``ingesting``.
``reconcile`` finds them and sends their message again:

* every ``queued`` job, every ``running`` job whose lease has expired, and every ``ingesting`` dataset
  whose lease has expired (or was never taken), older than ``grace_s``;
* unless a message for it is already waiting in its queue, or was handed to a worker less than one lease
  ago (kombu's Redis transport keeps those in the ``unacked`` hash with their delivery time).

Sending again is safe: a worker takes a job or dataset only through the compare-and-set claims of
``hilum.jobstate`` (one holder at a time, never a finished one), so a message that turns out to be a
duplicate finds the work taken or done and ends. Passes run at API and worker start-up and every
``HILUM_RECOVERY_INTERVAL_S`` in each API process; a Redis lock (SET NX with a TTL, released by
compare-and-delete) lets one process at a time do a pass, so several API processes never race.

The same pass deletes raw uploads whose ingestion has ended once ``HILUM_UPLOAD_RETENTION_HOURS``
has passed (at once when it is 0), and abandoned ones (no dataset) after a day. It first settles sweeps
(``hilum.sweeps.reconcile_sweeps``): unstarted members of a sweep past its ``max_minutes`` are cancelled,
and a sweep whose members have all ended but which no worker finalised (one died in between) is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine, create_engine, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from hilum.jobstate import lease_cutoff
from hilum.queue import GPU_QUEUE, INGEST_QUEUE, INGEST_TASK, TRAIN_TASK
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.sweeps import reconcile_sweeps
from hilum.tables import Dataset, Job, utcnow

log = logging.getLogger("hilum.recovery")

LOCK_KEY = "hilum:recovery-lock"
LOCK_TTL_S = 120
# kombu's Redis transport: one list per queue and priority step, and the messages handed to workers.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
ABANDONED_UPLOAD_S = 24 * 3600
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


@dataclass
class Recovery:
    """What one pass did."""

    jobs: list[str] = field(default_factory=list)  # re-queued
    datasets: list[str] = field(default_factory=list)  # re-queued
    uploads_deleted: list[str] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)  # finalised (hilum/sweeps.py: all members had ended)
    skipped: bool = False  # another process held the lock


# --------------------------------------------------------------------------- the database side (pure queries)


def lost_work(session: Session, *, now: datetime, lease_s: float, grace_s: float) -> tuple[list[str], list[str]]:
    """Ids of jobs and datasets that should be running or waiting but that no live worker holds."""
    cutoff, born_before = lease_cutoff(now, lease_s), lease_cutoff(now, grace_s)
    expired = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)
    jobs = session.scalars(
        select(Job.id)
        .where(Job.created_at < born_before)
        .where(or_(Job.status == "queued", (Job.status == "running") & expired))
        .order_by(Job.created_at)
    )
    datasets = session.scalars(
        select(Dataset.id)
        .where(Dataset.created_at < born_before, Dataset.status == "ingesting")
        .where(or_(Dataset.heartbeat_at.is_(None), Dataset.heartbeat_at < cutoff))
        .order_by(Dataset.created_at)
    )
    return list(jobs), list(datasets)


def expired_uploads(session: Session, storage: Storage, *, now: float, retention_s: float) -> list[str]:
    """Dataset ids whose raw upload may go: ingestion ended ``retention_s`` ago, or no dataset for a day."""
    uploads = {p.stem: p for p in (storage.root / "uploads").glob("*.zip")}
    if not uploads:
        return []
    status = dict(session.execute(select(Dataset.id, Dataset.status).where(Dataset.id.in_(list(uploads)))).all())
    expired = []
    for dataset_id, path in uploads.items():
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        state = status.get(dataset_id)
        if (state in ("ready", "failed") and age >= retention_s) or (state is None and age >= ABANDONED_UPLOAD_S):
            expired.append(dataset_id)
    return sorted(expired)


# --------------------------------------------------------------------------- the broker side


def message_target(raw: bytes | str) -> tuple[str, str] | None:
    """(task name, first argument) of one kombu message as the Redis transport stores it, or None."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # the unacked hash stores [message, exchange, routing_key]
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(message["headers"]["task"]), str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def messages_present(client: redis.Redis, prefix: str, *, fresh_s: float, now: float) -> set[tuple[str, str]]:
    """(task, id) of every message waiting in a queue, or handed to a worker less than ``fresh_s`` ago.

    A message handed out earlier whose work is still unclaimed belongs to a worker presumed dead.
    """
    present: set[tuple[str, str]] = set()
    for queue in (GPU_QUEUE, INGEST_QUEUE):
        for step in PRIORITY_STEPS:
            key = prefix + (f"{queue}{PRIORITY_SEP}{step}" if step else queue)
            present.update(t for raw in client.lrange(key, 0, -1) if (t := message_target(raw)))
    tags: list[Any] = list(client.zrangebyscore(prefix + UNACKED_INDEX, now - fresh_s, "+inf"))
    if tags:
        present.update(t for raw in client.hmget(prefix + UNACKED, tags) if raw and (t := message_target(raw)))
    return present


@contextmanager
def pass_lock(client: redis.Redis, prefix: str) -> Iterator[bool]:
    """Yields True if this process holds the recovery lock (one pass at a time across processes)."""
    token = secrets.token_hex(8)
    key = prefix + LOCK_KEY
    held = bool(client.set(key, token, nx=True, ex=LOCK_TTL_S))
    try:
        yield held
    finally:
        if held:
            client.eval(_RELEASE, 1, key, token)


# --------------------------------------------------------------------------- one pass


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    """Connections opened only for a pass: nothing pooled is inherited by a worker's forked children."""
    args = {"timeout": 30} if url.startswith("sqlite") else {}
    return create_engine(url, poolclass=NullPool, connect_args=args)


def reconcile(settings: Settings, celery: Celery, *, grace_s: float = 10.0) -> Recovery:
    """One pass: re-queue lost jobs and datasets, delete expired uploads. See the module docstring."""
    assert settings.redis_url, "recovery needs the broker's REDIS_URL"
    client = redis.Redis.from_url(settings.redis_url)
    prefix = settings.broker_key_prefix
    outcome = Recovery()
    with pass_lock(client, prefix) as held:
        if not held:
            outcome.skipped = True
            return outcome
        with Session(_engine(settings.resolved_database_url)) as session:
            # Sweeps first: members of an overdue sweep are cancelled here rather than re-queued below.
            outcome.sweeps = reconcile_sweeps(session, Storage(settings.data_dir), now=utcnow())
            jobs, datasets = lost_work(session, now=utcnow(), lease_s=settings.job_lease_s, grace_s=grace_s)
            present = messages_present(client, prefix, fresh_s=settings.job_lease_s, now=time.time())
            for task, ids, found in ((TRAIN_TASK, jobs, outcome.jobs), (INGEST_TASK, datasets, outcome.datasets)):
                for item in ids:
                    if (task, item) not in present:
                        celery.send_task(task, args=[item])
                        found.append(item)
            storage = Storage(settings.data_dir)
            retention_s = settings.upload_retention_hours * 3600
            for dataset_id in expired_uploads(session, storage, now=time.time(), retention_s=retention_s):
                storage.upload_path(dataset_id).unlink(missing_ok=True)
                outcome.uploads_deleted.append(dataset_id)
    if outcome.jobs or outcome.datasets:
        log.warning("re-queued lost work: jobs %s, datasets %s", outcome.jobs, outcome.datasets)
    if outcome.sweeps:
        log.warning("finalised sweeps whose members had all ended: %s", outcome.sweeps)
    if outcome.uploads_deleted:
        log.info("deleted %d raw upload(s) past their retention", len(outcome.uploads_deleted))
    return outcome


def reconcile_safely(settings: Settings, celery: Celery) -> Recovery | None:
    """``reconcile``, logging instead of raising (the broker or database may be briefly away)."""
    try:
        return reconcile(settings, celery)
    except Exception:
        log.exception("recovery pass failed; the next one will try again")
        return None


async def recovery_loop(settings: Settings, celery: Celery) -> None:
    """At start-up and every ``HILUM_RECOVERY_INTERVAL_S`` (0: once): run a pass in a thread."""
    while True:
        await asyncio.to_thread(reconcile_safely, settings, celery)
        if settings.recovery_interval_s <= 0:
            return
        await asyncio.sleep(settings.recovery_interval_s)
