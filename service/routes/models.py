from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from service.deps import (
    AnyPrincipal,
    BatcherDep,
    ModelCacheDep,
    SessionDep,
    SettingsDep,
    StaffPrincipal,
    StorageDep,
)
from service.domain import cards
from service.domain import models as domain
from service.schemas.models import (
    AliasEventPublic,
    AliasPublic,
    AliasUpdate,
    BatchPrediction,
    ModelCard,
    ModelPublic,
    PredictionPublic,
)

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=list[ModelPublic], summary="Registered models, their versions and aliases")
def list_models(session: SessionDep, _: AnyPrincipal) -> list[ModelPublic]:
    return domain.list_models(session)


@router.get("/{name}", response_model=ModelPublic, summary="One model with its versions and aliases")
def get_model(name: str, session: SessionDep, _: AnyPrincipal) -> ModelPublic:
    return domain.get_model(session, name)


@router.put("/{name}/aliases/{alias}", response_model=AliasPublic, summary="Point an alias at a version")
def set_alias(name: str, alias: str, body: AliasUpdate, session: SessionDep, principal: StaffPrincipal) -> AliasPublic:
    return AliasPublic.model_validate(domain.set_alias(session, name, alias, body.version, actor=principal.id))


@router.get("/{name}/aliases/history", response_model=list[AliasEventPublic], summary="Every alias move")
def alias_history(name: str, session: SessionDep, _: StaffPrincipal) -> list[AliasEventPublic]:
    domain.require_model(session, name)
    return [AliasEventPublic.model_validate(e) for e in domain.alias_history(session, name)]


@router.post(
    "/{name}/predict",
    response_model=PredictionPublic,
    summary="Classify one X-ray (DICOM, PNG or JPEG)",
    description="Uses the `production` alias by default (the newest version while there is none); "
    "`version` or `alias` choose another.",
    responses={404: {"description": "unknown model, version or alias"}, 422: {"description": "not a usable image"}},
)
async def predict(
    name: str,
    file: Annotated[UploadFile, File(description="the X-ray: DICOM, PNG or JPEG")],
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    cache: ModelCacheDep,
    batcher: BatcherDep,
    principal: AnyPrincipal,
    version_field: Annotated[int | None, Form(alias="version", ge=1)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    alias: Annotated[str | None, Query(max_length=64)] = None,
    heatmap: Annotated[bool, Query(description="add a Grad-CAM overlay (PNG, base64)")] = False,
) -> PredictionPublic:
    started = time.perf_counter()
    row = domain.resolve_version(session, name, version=version_field or version, alias=alias)
    data = await domain.read_upload(file, max_bytes=settings.max_image_bytes)
    return await domain.predict_and_record(
        session,
        row,
        data,
        storage=storage,
        cache=cache,
        batcher=batcher,
        max_side=settings.max_image_side,
        key_id=principal.id,
        with_heatmap=heatmap,
        started=started,
    )


@router.post(
    "/{name}/predict/batch",
    response_model=BatchPrediction,
    summary="Classify several X-rays (several `files` fields, or one zip); a bad file fails alone",
)
async def predict_batch(
    name: str,
    files: Annotated[list[UploadFile], File(description="X-rays (DICOM, PNG, JPEG) or one zip of them")],
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    cache: ModelCacheDep,
    batcher: BatcherDep,
    principal: AnyPrincipal,
    version: Annotated[int | None, Query(ge=1)] = None,
    alias: Annotated[str | None, Query(max_length=64)] = None,
) -> BatchPrediction:
    row = domain.resolve_version(session, name, version=version, alias=alias)
    items = await domain.read_batch_items(files, settings=settings)
    return await domain.predict_batch(
        session,
        row,
        items,
        storage=storage,
        cache=cache,
        batcher=batcher,
        max_side=settings.max_image_side,
        key_id=principal.id,
    )


@router.get("/{name}/versions/{version}/card", response_model=ModelCard, summary="The model card of a version")
def model_card(name: str, version: int, session: SessionDep, storage: StorageDep, _: AnyPrincipal) -> ModelCard:
    return cards.model_card(session, storage, domain.resolve_version(session, name, version=version))


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=FileResponse,
    summary="Download a version as a self-contained artifact (PyTorch state dict + metadata)",
)
def download_artifact(
    name: str, version: int, session: SessionDep, storage: StorageDep, _: StaffPrincipal
) -> FileResponse:
    row = domain.resolve_version(session, name, version=version)
    return FileResponse(
        storage.resolve(row.artifact_path), media_type="application/octet-stream", filename=f"{name}-v{version}.pt"
    )


@router.get(
    "/{name}/versions/{version}/onnx",
    response_class=FileResponse,
    summary="Download a version exported to ONNX (calibrated probabilities out)",
)
def download_onnx(name: str, version: int, session: SessionDep, storage: StorageDep, _: StaffPrincipal) -> FileResponse:
    row = domain.resolve_version(session, name, version=version)
    return FileResponse(
        cards.onnx_file(storage, row), media_type="application/octet-stream", filename=f"{name}-v{version}.onnx"
    )
