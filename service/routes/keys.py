from __future__ import annotations

from fastapi import APIRouter, status

from service.deps import AdminPrincipal, SessionDep
from service.domain import keys as domain
from service.schemas.keys import KeyCreate, KeyCreated, KeyPublic

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated, summary="Issue an API key")
def create_key(body: KeyCreate, session: SessionDep, _: AdminPrincipal) -> KeyCreated:
    row, plain = domain.issue_key(session, name=body.name, role=body.role)
    return KeyCreated(**KeyPublic.model_validate(row).model_dump(), key=plain)


@router.get("", response_model=list[KeyPublic], summary="List API keys (never the secrets)")
def list_keys(session: SessionDep, _: AdminPrincipal) -> list[KeyPublic]:
    return [KeyPublic.model_validate(k) for k in domain.list_keys(session)]


@router.delete("/{key_id}", response_model=KeyPublic, summary="Revoke an API key")
def revoke_key(key_id: str, session: SessionDep, principal: AdminPrincipal) -> KeyPublic:
    return KeyPublic.model_validate(domain.revoke_key(session, key_id, acting_key_id=principal.id))
