"""Sign-in for the web app and its one page; every other asset is a static file under /web/static."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Cookie, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field

from hilum import websessions
from service.deps import SessionDep, SettingsDep

STATIC_DIR = Path(__file__).parent / "static"

# The pages may talk only to their own origin: a hospital network has no internet.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["web"])
SessionCookie = Annotated[str | None, Cookie(alias=websessions.COOKIE_NAME)]


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=500, description="an API key (admin, staff or clinician)")


class WebSessionPublic(BaseModel):
    key_id: str
    name: str
    role: str
    expires_at: datetime
    csrf_token: str = Field(description="send it as X-CSRF-Token on every state-changing request")


def _same_origin(request: Request) -> bool:
    """A sign-in posted by another site's page is refused (login CSRF); tools without Origin pass."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/ui", include_in_schema=False)
def ui() -> RedirectResponse:
    return RedirectResponse("/")


@router.post("/web/session", response_model=WebSessionPublic, summary="Sign in: exchange an API key for a cookie")
def sign_in(
    body: SignIn, request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> WebSessionPublic:
    if not _same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign-in from another site is refused")
    found = websessions.sign_in(session, body.key.strip(), ttl_s=settings.web_session_ttl_s)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "that key is not valid (unknown, revoked or expired)")
    key, token, expires = found
    session.commit()  # before the answer: the page's next request must find the session
    response.set_cookie(
        websessions.COOKIE_NAME,
        token,
        max_age=settings.web_session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=settings.web_cookie_secure,
        path="/",
    )
    return WebSessionPublic(
        key_id=key.id, name=key.name, role=key.role, expires_at=expires, csrf_token=websessions.csrf_token(token)
    )


@router.get("/web/session", summary="Who is signed in (from the cookie); signed_in false when nobody is")
def current(session: SessionDep, token: SessionCookie = None) -> dict:
    found = websessions.find_session(session, token)
    if token is None or found is None:  # a 200, not a 401: the page asks this on every load
        return {"signed_in": False}
    key, row = found
    public = WebSessionPublic(
        key_id=key.id, name=key.name, role=key.role, expires_at=row.expires_at, csrf_token=websessions.csrf_token(token)
    )
    return {"signed_in": True, **public.model_dump(mode="json")}


@router.delete("/web/session", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out")
def sign_out(request: Request, session: SessionDep, token: SessionCookie = None) -> Response:
    if token is not None and not websessions.csrf_ok(request.method, token, request.headers):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token header")
    websessions.sign_out(session, token)
    session.commit()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(websessions.COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
