from __future__ import annotations

from fastapi import APIRouter, status

from service.deps import AdminPrincipal, SessionDep
from service.domain import keys as domain
from service.schemas.keys import KeyCreate, KeyCreated, KeyPublic, KeyRotate, KeyRotated

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated, summary="Issue an API key")
def create_key(body: KeyCreate, session: SessionDep, principal: AdminPrincipal) -> KeyCreated:
    row, plain = domain.issue_key(
        session, name=body.name, role=body.role, expires_at=body.expires_at, actor=principal.id
    )
    return KeyCreated(**KeyPublic.model_validate(row).model_dump(exclude={"active"}), key=plain)


@router.get("", response_model=list[KeyPublic], summary="List API keys (never the secrets)")
def list_keys(session: SessionDep, _: AdminPrincipal) -> list[KeyPublic]:
    return [KeyPublic.model_validate(k) for k in domain.list_keys(session)]


@router.get("/{key_id}", response_model=KeyPublic, summary="One API key: expiry, last use, rotation")
def get_key(key_id: str, session: SessionDep, _: AdminPrincipal) -> KeyPublic:
    return KeyPublic.model_validate(domain.get_key(session, key_id))


@router.post(
    "/{key_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyRotated,
    summary="Rotate a key: a new key now, the old one valid for a grace period",
)
def rotate_key(key_id: str, body: KeyRotate, session: SessionDep, principal: AdminPrincipal) -> KeyRotated:
    new, plain, old = domain.rotate_key(
        session, key_id, grace_seconds=body.grace_seconds, expires_at=body.expires_at, actor=principal.id
    )
    created = KeyCreated(**KeyPublic.model_validate(new).model_dump(exclude={"active"}), key=plain)
    return KeyRotated(key=created, previous=KeyPublic.model_validate(old))


@router.delete("/{key_id}", response_model=KeyPublic, summary="Revoke an API key")
def revoke_key(key_id: str, session: SessionDep, principal: AdminPrincipal) -> KeyPublic:
    return KeyPublic.model_validate(domain.revoke_key(session, key_id, acting_key_id=principal.id))
