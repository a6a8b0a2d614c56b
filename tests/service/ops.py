"""A live stack with extra settings, for the operations tests (rate limits, readiness, metrics, logs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import Stack, delete_broker_keys, make_stack


@contextmanager
def ops_stack(tmp: Path, *, worker: bool, **env: str) -> Iterator[Stack]:
    """uvicorn (and a Celery worker when ``worker``) on SQLite with ``env`` added; stopped and cleaned after."""
    stack, _ = make_stack(tmp, "sqlite", redis_db=13)
    stack.env.update(env)
    try:
        stack.start_api()
        if worker:
            stack.start_worker()
            stack.wait_worker_ready("w1")
        yield stack
    finally:
        stack.stop()
        delete_broker_keys(stack)


def eventually(check: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s")
