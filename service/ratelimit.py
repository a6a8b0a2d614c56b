"""Rate limits per API key and route class (predictions, uploads, job creation), shared through Redis.

GCRA (the generic cell rate algorithm, as in ``redis-cell`` and Stripe's limiter): one Redis key per (class, key)
holding the theoretical arrival time, updated by one Lua script on Redis's own clock. Compared with a fixed window
it allows no double burst at a window edge and gives an exact ``Retry-After``; compared with slowapi it runs as
an ASGI middleware before the body is read (an over-limit upload is refused before a byte is stored) and needs no
decorator on routes owned elsewhere. "600/minute" allows a burst of 600, refilled at 10 a second.

When Redis cannot be reached the limiter fails open and logs a warning (at most every 30 s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from hilum.settings import Settings
from hilum.websessions import COOKIE_NAME
from service.metrics import RATE_LIMITED

log = logging.getLogger(__name__)

PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
WARN_EVERY_S = 30.0

# (method, path pattern, class): the routes each limit covers.
ROUTE_CLASSES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/v1/models/[^/]+/predict(/batch)?/?$"), "predictions"),
    ("POST", re.compile(r"^/v1/datasets/?$"), "uploads"),
    ("POST", re.compile(r"^/v1/weights/?$"), "uploads"),
    ("POST", re.compile(r"^/v1/models/import/?$"), "uploads"),
    ("POST", re.compile(r"^/v1/jobs/?$"), "jobs"),
)

# KEYS[1]: the limit's key. ARGV: emission interval (us), tolerance (us). Returns {allowed, retry_after_us}.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Limit:
    count: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Limit | None:
        """``"600/minute"`` (or ``/second``, ``/hour``); ``"off"`` or ``""``: no limit."""
        text = text.strip().lower()
        if text in ("", "off", "none"):
            return None
        match = re.fullmatch(r"(\d+)\s*/\s*(second|minute|hour)", text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"bad rate limit {text!r}: write N/second, N/minute, N/hour or off")
        return cls(int(match.group(1)), PERIODS[match.group(2)])

    @property
    def interval_us(self) -> int:
        return max(1, int(self.period_s * 1e6 / self.count))

    def __str__(self) -> str:
        unit = {v: k for k, v in PERIODS.items()}[self.period_s]
        return f"{self.count}/{unit}"


def limits_from(settings: Settings) -> dict[str, Limit]:
    configured = {
        "predictions": settings.rate_limit_predictions,
        "uploads": settings.rate_limit_uploads,
        "jobs": settings.rate_limit_jobs,
    }
    parsed = {name: Limit.parse(text) for name, text in configured.items()}
    return {name: limit for name, limit in parsed.items() if limit is not None}


def route_class(method: str, path: str) -> str | None:
    for route_method, pattern, name in ROUTE_CLASSES:
        if method == route_method and pattern.match(path):
            return name
    return None


class RateLimiter:
    """The Redis side: ``check`` answers (allowed, seconds to wait)."""

    def __init__(self, settings: Settings) -> None:
        self.limits = limits_from(settings)
        self.prefix = f"{settings.broker_key_prefix}hilum:ratelimit:"
        self._client = aioredis.Redis.from_url(
            settings.redis_url or "redis://127.0.0.1:6379/0", socket_timeout=1, socket_connect_timeout=1
        )
        self._script = self._client.register_script(GCRA_SCRIPT)
        self._last_warning = -math.inf

    async def check(self, route: str, credential: str) -> tuple[bool, float]:
        limit = self.limits.get(route)
        if limit is None:
            return True, 0.0
        identity = hashlib.sha256(credential.encode()).hexdigest()[:32]  # never the key itself
        tolerance = limit.interval_us * (limit.count - 1)
        try:
            allowed, retry_us = await self._script(
                keys=[f"{self.prefix}{route}:{identity}"], args=[limit.interval_us, tolerance]
            )
        except (redis.RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._last_warning > WARN_EVERY_S:
                self._last_warning = now
                log.warning("rate limits not enforced: Redis unavailable (%s)", type(exc).__name__)
            return True, 0.0
        return bool(allowed), int(retry_us) / 1e6


class RateLimitMiddleware:
    """Refuses an over-limit request with 429 and ``Retry-After`` before the route (or its body) is touched."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = route_class(scope.get("method", ""), scope.get("path", ""))
        credential = _credential(scope) if name else None
        if name is None or credential is None:  # no key: authentication answers 401
            await self.app(scope, receive, send)
            return
        allowed, wait_s = await self.limiter.check(name, credential)
        if allowed:
            await self.app(scope, receive, send)
            return
        RATE_LIMITED.labels(name).inc()
        retry_after = max(1, math.ceil(wait_s))
        limit = self.limiter.limits[name]
        body = json.dumps(
            {"detail": f"rate limit for {name} exceeded ({limit} per key); retry after {retry_after} s"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _credential(scope: Scope) -> str | None:
    """The bearer key, else the web app's session cookie (a signed-in browser), else None."""
    headers = Headers(scope=scope)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    session = cookie_parser(headers.get("cookie", "")).get(COOKIE_NAME)
    return f"session:{session}" if session else None
