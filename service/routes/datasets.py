from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from hilum.tables import Dataset, new_id
from service.deps import CeleryDep, SessionDep, SettingsDep, StaffPrincipal, StorageDep
from service.domain import datasets as domain
from service.schemas.datasets import DatasetPublic, RejectedFile, RejectionsPage
from service.uploads import multipart_openapi, receive_file

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = multipart_openapi(
    "zip of class folders (NORMAL/..., PNEUMONIA/...) or of images plus labels.csv",
    {
        "name": {"type": "string", "description": "a name for the dataset"},
        "classes": {
            "type": "string",
            "description": "the classes the upload must hold, comma-separated (e.g. NORMAL,PNEUMONIA); "
            "labels are normalised (whitespace stripped, upper-cased) before the check",
        },
    },
    required=[],
)


def to_public(dataset: Dataset) -> DatasetPublic:
    public = DatasetPublic.model_validate(dataset)
    report = dataset.report or {}
    if report:
        public.rejected = [RejectedFile.model_validate(r) for r in report.get("rejected", [])]
        public.rejected_total = int(report.get("rejected_total", len(public.rejected)))
        public.rejected_by_reason = dict(report.get("rejected_by_reason", {}))
        public.warnings = list(report.get("warnings", []))
    return public


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DatasetPublic,
    summary="Upload a labelled X-ray dataset (zip); ingestion runs in the background",
    openapi_extra=UPLOAD_BODY,
    responses={413: {"description": "upload over the size limit"}, 422: {"description": "bad archive"}},
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    celery: CeleryDep,
    principal: StaffPrincipal,
) -> DatasetPublic:
    dataset_id = new_id()
    upload = await receive_file(
        request, storage.upload_path(dataset_id), file_field="file", max_bytes=settings.max_upload_bytes
    )
    dataset = await run_in_threadpool(
        domain.accept_upload,
        session,
        celery,
        settings,
        dataset_id=dataset_id,
        upload=upload.path,
        filename=upload.filename,
        size=upload.size,
        name=upload.fields.get("name"),
        created_by=principal.id,
        classes=upload.fields.get("classes"),
    )
    return to_public(dataset)


@router.get("", response_model=list[DatasetPublic], summary="List datasets")
def list_datasets(session: SessionDep, _: StaffPrincipal, status: str | None = None) -> list[DatasetPublic]:
    return [to_public(d) for d in domain.list_datasets(session, status=status)]


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="A dataset with its ingestion report")
def get_dataset(dataset_id: str, session: SessionDep, _: StaffPrincipal) -> DatasetPublic:
    return to_public(domain.get_dataset(session, dataset_id))


@router.get(
    "/{dataset_id}/rejections",
    response_model=RejectionsPage,
    summary="Every rejected file of a dataset, a page at a time (the report lists only the first)",
)
def list_rejections(
    dataset_id: str,
    session: SessionDep,
    storage: StorageDep,
    _: StaffPrincipal,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RejectionsPage:
    total, items = domain.get_rejections(
        session, storage.dataset_dir(dataset_id), dataset_id, offset=offset, limit=limit
    )
    return RejectionsPage(
        total=total, offset=offset, limit=limit, items=[RejectedFile.model_validate(i) for i in items]
    )
