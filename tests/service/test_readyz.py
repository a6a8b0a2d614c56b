"""/readyz over real HTTP: 503 naming what failed until a worker consumes each queue; /healthz stays 200."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Stack
from tests.service.ops import eventually, ops_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[Stack]:
    """An API with no worker yet; readiness answers are not cached."""
    with ops_stack(tmp_path_factory.mktemp("readyz"), worker=False, HILUM_READY_CACHE_S="0") as stack:
        yield stack


def readyz(stack: Stack) -> httpx.Response:
    return httpx.get(stack.base_url + "/readyz", timeout=30)


def test_unready_without_workers_then_ready(bare: Stack) -> None:
    r = readyz(bare)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unready"
    assert set(body["failed"]) == {"queue:gpu", "queue:ingest"}, body
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert httpx.get(bare.base_url + "/healthz").status_code == 200  # alive all the same

    bare.start_worker("ingest-only", queues="ingest")
    bare.wait_worker_ready("ingest-only")
    eventually(lambda: readyz(bare).json()["failed"] == ["queue:gpu"], what="ingest consumed, gpu not")

    bare.start_worker("gpu", queues="gpu")
    bare.wait_worker_ready("gpu")
    eventually(lambda: readyz(bare).status_code == 200, what="ready")
    assert readyz(bare).json()["checks"]["queue:gpu"].startswith("ok (1 worker")


def test_disk_below_minimum_is_named(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> None:
    with ops_stack(tmp_path_factory.mktemp("disk"), worker=False, HILUM_READY_MIN_FREE_MB=str(2**40)) as stack:
        body = readyz(stack).json()
        assert "disk" in body["failed"]
        assert "HILUM_READY_MIN_FREE_MB" in body["checks"]["disk"]
