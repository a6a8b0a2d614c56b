from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, status

from service.deps import CeleryDep, SessionDep, SettingsDep, StaffPrincipal, StorageDep
from service.domain import sweeps as domain
from service.schemas.sweeps import SweepCreate, SweepPublic

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepPublic,
    summary="Start a sweep: one training job per grid config; the best member becomes a version",
)
def create_sweep(
    body: SweepCreate,
    session: SessionDep,
    celery: CeleryDep,
    storage: StorageDep,
    principal: StaffPrincipal,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> SweepPublic:
    sweep = domain.create_sweep(
        session, celery, storage, body, created_by=principal.id, idempotency_key=idempotency_key
    )
    return domain.to_public(session, storage, sweep)


@router.get("", response_model=list[SweepPublic], summary="List sweeps, newest first")
def list_sweeps(
    session: SessionDep,
    storage: StorageDep,
    _: StaffPrincipal,
    dataset_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[SweepPublic]:
    sweeps = domain.list_sweeps(session, dataset_id=dataset_id, limit=limit)
    return [domain.to_public(session, storage, s) for s in sweeps]


@router.get("/{sweep_id}", response_model=SweepPublic, summary="A sweep: status, members table, registered version")
def get_sweep(sweep_id: str, session: SessionDep, storage: StorageDep, _: StaffPrincipal) -> SweepPublic:
    return domain.to_public(session, storage, domain.get_sweep(session, sweep_id))


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, summary="Cancel a sweep's queued and running members")
def cancel_sweep(
    sweep_id: str, session: SessionDep, storage: StorageDep, settings: SettingsDep, _: StaffPrincipal
) -> SweepPublic:
    sweep = domain.cancel_sweep(session, storage, sweep_id, lease_s=settings.job_lease_s)
    return domain.to_public(session, storage, sweep)
