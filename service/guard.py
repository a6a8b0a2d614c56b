"""The request guard: a pure ASGI middleware in front of every route that takes a body.

FastAPI parses (and spools to disk) a multipart body before any dependency runs, so the key
check of ``service.deps`` comes too late to protect the disk. For a request that carries a body
(a ``Content-Length`` above 0 or a ``Transfer-Encoding``), this guard

1. checks the bearer key (or the web app's session cookie and its CSRF header) against the database,
   in a thread, and answers 401 (or 403), with the same body as the routes' own check, before one body
   byte is read;
2. caps the body per route: a declared ``Content-Length`` past the cap is refused at once (413); a
   chunked body is counted while the route reads it and cut off (413) as soon as it passes the cap.

Outside ``/v1`` (the web app's sign-in) only the cap applies. Roles (403) stay with the routes.
Caps (settings): dataset and weights uploads ``HILUM_MAX_UPLOAD_BYTES``, one prediction
``HILUM_MAX_IMAGE_BYTES``, a batch ``HILUM_MAX_BATCH_BYTES`` (each plus ``FORM_SLACK`` for multipart
headers and small fields), anything else ``HILUM_MAX_JSON_BYTES``.
"""

from __future__ import annotations

import re

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hilum.db import session_scope
from hilum.keys import find_active_key
from hilum.settings import Settings
from hilum.websessions import has_session_cookie, principal_from_cookie

FORM_SLACK = 1 << 20
MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>'"
INVALID_KEY = "invalid or revoked API key"
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}

# (path, the setting that caps its body, slack added for multipart headers and small fields)
_CAPS: list[tuple[re.Pattern[str], str, int]] = [
    (re.compile(r"^/v1/datasets/?$"), "max_upload_bytes", FORM_SLACK),
    (re.compile(r"^/v1/weights/?$"), "max_upload_bytes", FORM_SLACK),
    (re.compile(r"^/v1/models/import/?$"), "max_upload_bytes", FORM_SLACK),
    (re.compile(r"^/v1/models/[^/]+/predict/?$"), "max_image_bytes", FORM_SLACK),
    (re.compile(r"^/v1/models/[^/]+/predict/batch/?$"), "max_batch_bytes", 0),
    (re.compile(r"^/v1/preview/?$"), "max_image_bytes", FORM_SLACK),  # the web app's film preview
]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its cap; FastAPI re-raises HTTPExceptions."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def body_cap(settings: Settings, path: str) -> tuple[int, str]:
    """The most bytes a request body to ``path`` may have, and the 413 detail naming the setting behind it."""
    field, slack = next(((f, s) for p, f, s in _CAPS if p.match(path)), ("max_json_bytes", 0))
    limit = int(getattr(settings, field))
    setting = f"HILUM_{field.upper()} = {limit:,} bytes" + (f" plus {slack:,} for the form" if slack else "")
    cap = limit + slack
    return cap, f"request body is larger than the limit of {cap:,} bytes for this route ({setting})"


def bearer_token(headers: Headers) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (FastAPI's HTTPBearer rules), else None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _has_body(headers: Headers) -> bool:
    if "transfer-encoding" in headers:
        return True
    length = headers.get("content-length", "0").strip()
    return not (length.isdigit() and int(length) == 0)


class RequestGuard:
    """Key first, then a capped body, for every ``/v1`` request that has a body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not _has_body(headers):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):  # elsewhere (the web app's sign-in): capped, no key
            refusal = await self._refusal(scope.get("method", "POST"), headers)
            if refusal is not None:
                code, problem, extra = refusal
                await JSONResponse({"detail": problem}, code, headers=extra)(scope, receive, send)
                return
        cap, too_large = body_cap(self.settings, path)
        length = headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > cap:
            await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
            return
        await self._capped(scope, receive, send, cap, too_large)

    async def _refusal(self, method: str, headers: Headers) -> tuple[int, str, dict[str, str] | None] | None:
        """None when the request may go on, else (status, detail, headers): the rules of service.deps."""
        token = bearer_token(headers)
        if token is None:
            cookies = cookie_parser(headers.get("cookie", ""))
            if has_session_cookie(cookies):  # the web app's session (issue 10), CSRF included
                return await anyio.to_thread.run_sync(self._cookie_refusal, method, cookies, headers)
            return 401, MISSING_KEY, UNAUTHORIZED_HEADERS
        found = await anyio.to_thread.run_sync(self._key_found, token)
        return None if found else (401, INVALID_KEY, UNAUTHORIZED_HEADERS)

    def _key_found(self, token: str) -> bool:
        with session_scope(self.settings.resolved_database_url) as session:
            return find_active_key(session, token) is not None

    def _cookie_refusal(
        self, method: str, cookies: dict[str, str], headers: Headers
    ) -> tuple[int, str, dict[str, str] | None] | None:
        with session_scope(self.settings.resolved_database_url) as session:
            key, code, problem = principal_from_cookie(session, method=method, cookies=cookies, headers=headers)
        return None if key is not None else (code, problem, None)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, cap: int, too_large: str) -> None:
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(too_large)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except BodyTooLarge as exc:  # raised where no exception handler turned it into a response
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, 413)(scope, receive, send)
