"""Rate limits per key and route class, shared by two API processes through Redis, over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from hilum.settings import Settings
from service.ratelimit import Limit, RateLimiter, route_class
from tests.conftest import REPO, Stack, free_port
from tests.service.ops import ops_stack

pytestmark = pytest.mark.e2e

PREDICT = "/v1/models/nothing-here/predict"
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[tuple[Stack, str]]:
    """An API with low limits, and a second API process on the same Redis and database (its base URL)."""
    env = {
        "HILUM_RATE_LIMIT_PREDICTIONS": "3/minute",
        "HILUM_RATE_LIMIT_UPLOADS": "2/hour",
        "HILUM_RATE_LIMIT_JOBS": "off",
    }
    with ops_stack(tmp_path_factory.mktemp("ratelimit"), worker=False, **env) as stack:
        port = free_port()
        second = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--port", str(port)],
            env=stack.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.procs["api-2"] = second
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert second.poll() is None, "second API exited"
            time.sleep(0.2)
        yield stack, url


def new_key(stack: Stack, name: str) -> str:
    with stack.client() as admin:
        r = admin.post("/v1/keys", json={"name": name, "role": "clinician"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def predict(base_url: str, key: str) -> httpx.Response:
    return httpx.post(
        base_url + PREDICT,
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("x.png", PNG, "image/png")},
        timeout=30,
    )


def test_predictions_are_limited_per_key_across_api_processes(limited: tuple[Stack, str]) -> None:
    stack, second_url = limited
    key, other = new_key(stack, "loop-a"), new_key(stack, "loop-b")
    # Three allowed (split over both processes: the budget is shared), then 429 on either process.
    answers = [predict(url, key).status_code for url in (stack.base_url, second_url, stack.base_url)]
    assert 429 not in answers, answers
    refused = predict(second_url, key)
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 20  # 3/minute refills one every 20 s
    assert "predictions" in refused.json()["detail"]
    assert predict(stack.base_url, key).status_code == 429
    # Another key has its own budget; other route classes are not touched.
    assert predict(stack.base_url, other).status_code != 429
    with stack.client(key) as client:
        assert client.get("/v1/models").status_code == 200
    metrics = httpx.get(second_url + "/metrics").text
    assert 'hilum_rate_limited_total{route_class="predictions"}' in metrics


def test_uploads_have_their_own_limit(limited: tuple[Stack, str]) -> None:
    stack, _ = limited
    with stack.client() as admin:  # the admin key has spent none of its upload budget
        codes = [
            admin.post("/v1/weights", files={"file": ("w.pth", b"x", "application/octet-stream")}).status_code
            for _ in range(3)
        ]
        assert codes[:2] != [429, 429] and codes[2] == 429, codes
        assert admin.post("/v1/jobs", json={}).status_code == 422  # jobs: "off"


def test_limits_parse_and_routes_classify() -> None:
    assert Limit.parse("600/minute") == Limit(600, 60.0)
    assert Limit.parse("off") is None
    with pytest.raises(ValueError, match="N/minute"):
        Limit.parse("600 per minute")
    assert route_class("POST", "/v1/models/m/predict") == "predictions"
    assert route_class("POST", "/v1/models/m/predict/batch") == "predictions"
    assert route_class("POST", "/v1/datasets") == "uploads"
    assert route_class("POST", "/v1/jobs") == "jobs"
    assert route_class("GET", "/v1/jobs") is None


def test_fails_open_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_predictions="1/hour")
    limiter = RateLimiter(settings)

    async def twice() -> list[tuple[bool, float]]:
        return [await limiter.check("predictions", "hk_x") for _ in range(2)]

    with caplog.at_level(logging.WARNING, logger="service.ratelimit"):
        assert asyncio.run(twice()) == [(True, 0.0), (True, 0.0)]
    assert "rate limits not enforced" in caplog.text
    assert "hk_x" not in caplog.text
