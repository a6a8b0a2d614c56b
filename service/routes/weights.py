from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool

from hilum.tables import new_id
from service.deps import AdminPrincipal, SessionDep, SettingsDep, StaffPrincipal, StorageDep
from service.domain import weights as domain
from service.schemas.weights import WeightsPublic
from service.uploads import multipart_openapi, receive_file

router = APIRouter(prefix="/v1/weights", tags=["weights"])

UPLOAD_BODY = multipart_openapi(
    "an ImageNet state dict (.safetensors or .pth)",
    {"backbone": {"type": "string", "example": "resnet50"}},
    required=["backbone"],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WeightsPublic,
    summary="Register a local pretrained weights file (air-gapped sites)",
    openapi_extra=UPLOAD_BODY,
)
async def upload_weights(
    request: Request, session: SessionDep, settings: SettingsDep, storage: StorageDep, principal: AdminPrincipal
) -> WeightsPublic:
    upload = await receive_file(
        request,
        storage.root / "uploads" / f"weights-{new_id()}",
        file_field="file",
        max_bytes=settings.max_upload_bytes,
    )
    row = await run_in_threadpool(
        domain.register_upload,
        session,
        storage,
        upload=upload.path,
        filename=upload.filename,
        backbone=upload.fields.get("backbone"),
        actor=principal.id,
    )
    return WeightsPublic.model_validate(row)


@router.get("", response_model=list[WeightsPublic], summary="Registered weights files")
def list_weights(session: SessionDep, _: StaffPrincipal) -> list[WeightsPublic]:
    return [WeightsPublic.model_validate(w) for w in domain.list_weights(session)]
