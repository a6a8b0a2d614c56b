"""FastAPI dependencies as Annotated aliases; tests swap them with app.dependency_overrides."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from hilum.db import session_scope
from hilum.keys import Role, find_active_key, touch_key
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import ApiKey
from hilum.websessions import has_session_cookie, principal_from_cookie
from service.batcher import MicroBatcher
from service.domain.predictions import Serving
from service.model_cache import ModelCache


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.resolved_database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_storage(settings: SettingsDep) -> Storage:
    return Storage(settings.data_dir)


StorageDep = Annotated[Storage, Depends(get_storage)]


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]


def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]


def get_serving(settings: SettingsDep, storage: StorageDep, cache: ModelCacheDep, batcher: BatcherDep) -> Serving:
    """Everything answering a prediction needs, as one object (the model's preprocessing comes from its artifact)."""
    return Serving(
        storage=storage,
        cache=cache,
        batcher=batcher,
        max_image_bytes=settings.max_image_bytes,
        batch_max_files=settings.batch_max_files,
    )


ServingDep = Annotated[Serving, Depends(get_serving)]

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer <key>`")


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    if credentials is None and has_session_cookie(request.cookies):  # the web app's sign-in (issue 10)
        cookie_key, code, problem = principal_from_cookie(
            session, method=request.method, cookies=request.cookies, headers=request.headers
        )
        if cookie_key is None:
            raise HTTPException(code, problem)
        touch_key(session, cookie_key, every_s=settings.key_last_used_interval_s)
        return cookie_key
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = find_active_key(session, credentials.credentials)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    touch_key(session, key, every_s=settings.key_last_used_interval_s)
    return key


CurrentPrincipal = Annotated[ApiKey, Depends(get_principal)]


def require_roles(*roles: Role) -> Callable[[ApiKey], ApiKey]:
    allowed = {r.value for r in roles}

    def check(principal: CurrentPrincipal) -> ApiKey:
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"the '{principal.role}' role may not do this; needed: {', '.join(sorted(allowed))}",
            )
        return principal

    return check


AdminPrincipal = Annotated[ApiKey, Depends(require_roles(Role.admin))]
StaffPrincipal = Annotated[ApiKey, Depends(require_roles(Role.admin, Role.staff))]
AnyPrincipal = Annotated[ApiKey, Depends(require_roles(Role.admin, Role.staff, Role.clinician))]
