from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, status
from fastapi.responses import FileResponse, StreamingResponse

from service.deps import CeleryDep, SessionDep, SettingsDep, StaffPrincipal, StorageDep
from service.domain import jobs as domain
from service.schemas.jobs import JobCreate, JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    summary="Start a training job (queued on the gpu queue)",
)
def create_job(
    body: JobCreate,
    session: SessionDep,
    celery: CeleryDep,
    principal: StaffPrincipal,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    job = domain.create_job(session, celery, body, created_by=principal.id, idempotency_key=idempotency_key)
    return domain.to_public(session, job)


@router.get("", response_model=list[JobPublic], summary="List jobs")
def list_jobs(
    session: SessionDep,
    _: StaffPrincipal,
    status: JobStatus | None = None,
    dataset_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[JobPublic]:
    jobs = domain.list_jobs(session, status=status, dataset_id=dataset_id, limit=limit)
    return [domain.to_public(session, j) for j in jobs]


@router.get("/{job_id}", response_model=JobPublic, summary="A job: status, progress, metrics")
def get_job(job_id: str, session: SessionDep, _: StaffPrincipal) -> JobPublic:
    return domain.to_public(session, domain.get_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, summary="Cancel a queued or running job")
def cancel_job(job_id: str, session: SessionDep, settings: SettingsDep, _: StaffPrincipal) -> JobPublic:
    return domain.to_public(session, domain.cancel_job(session, job_id, lease_s=settings.job_lease_s))


@router.get(
    "/{job_id}/events",
    summary="Follow a job live (server-sent events: one `job` event per change, then `end`)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def job_events(job_id: str, session: SessionDep, settings: SettingsDep, _: StaffPrincipal) -> StreamingResponse:
    domain.get_job(session, job_id)  # 404 before the stream starts
    return StreamingResponse(
        domain.job_events(settings.resolved_database_url, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/report", summary="The training report: every number, per-epoch history, image links")
def job_report(job_id: str, session: SessionDep, storage: StorageDep, _: StaffPrincipal) -> dict:
    report = domain.read_report(storage, domain.get_job(session, job_id))
    report["images"] = {name: f"/v1/jobs/{job_id}/report/{name}" for name in domain.report_images(storage, job_id)}
    return report


@router.get(
    "/{job_id}/report/{image}",
    response_class=FileResponse,
    summary="A report picture: roc.png, curves.png, calibration.png, confusion.png",
    responses={200: {"content": {"image/png": {}}}},
)
def job_report_image(
    job_id: str, image: str, session: SessionDep, storage: StorageDep, _: StaffPrincipal
) -> FileResponse:
    domain.get_job(session, job_id)
    return FileResponse(domain.report_image_path(storage, job_id, image), media_type="image/png")
