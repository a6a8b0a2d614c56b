from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from hilum.tables import ModelVersion, new_id
from service.deps import AdminPrincipal, AnyPrincipal, ServingDep, SessionDep, SettingsDep, StaffPrincipal, StorageDep
from service.domain import cards, imports, predictions, registry
from service.domain.predictions import Serving
from service.schemas.common import MAX_DB_INT, VersionPath
from service.schemas.jobs import MODEL_NAME_PATTERN
from service.schemas.models import (
    AliasEventPublic,
    AliasPublic,
    AliasUpdate,
    BatchPrediction,
    ModelCard,
    ModelPublic,
    ModelVersionPublic,
    PredictionPublic,
    ThresholdEventPublic,
    ThresholdPublic,
    ThresholdUpdate,
)
from service.uploads import multipart_openapi, read_upload, receive_file

router = APIRouter(prefix="/v1/models", tags=["models"])

LabelWhenOod = Annotated[
    bool, Query(description="show the label even when the film looks out of distribution (withheld by default)")
]
Tta = Annotated[
    bool, Query(description="test-time augmentation: average the logits over a few anatomy-safe variants (no flips)")
]


IMPORT_BODY = multipart_openapi(
    "a Hilum model artifact (the model.pt that GET /v1/models/{name}/versions/{v}/artifact returns)",
    {"model_name": {"type": "string", "example": "pneumonia", "pattern": MODEL_NAME_PATTERN}},
    required=["model_name"],
)


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelVersionPublic,
    summary="Import a model artifact trained at another site as a new version (admin)",
    description="The file is loaded safely (weights only) and checked: Hilum artifact format, a known backbone "
    "whose weights fit, class names, preprocessing. Fitness comes from the artifact; the class list must match "
    "earlier versions of `model_name`. Audit-logged as `model.import`.",
    openapi_extra=IMPORT_BODY,
    responses={409: {"description": "`model_name` has versions with other classes"}},
)
async def import_model(
    request: Request, session: SessionDep, settings: SettingsDep, storage: StorageDep, principal: AdminPrincipal
) -> ModelVersionPublic:
    upload = await receive_file(
        request,
        storage.root / "uploads" / f"model-{new_id()}.pt",
        file_field="file",
        max_bytes=settings.max_upload_bytes,
    )
    row = await run_in_threadpool(
        imports.import_model,
        session,
        storage,
        upload=upload.path,
        model_name=upload.fields.get("model_name"),
        actor=principal.id,
    )
    return ModelVersionPublic.model_validate(row)


@router.get("", response_model=list[ModelPublic], summary="Registered models, their versions and aliases")
def list_models(session: SessionDep, _: AnyPrincipal) -> list[ModelPublic]:
    return registry.list_models(session)


@router.get("/{name}", response_model=ModelPublic, summary="One model with its versions and aliases")
def get_model(name: str, session: SessionDep, _: AnyPrincipal) -> ModelPublic:
    return registry.get_model(session, name)


@router.put(
    "/{name}/aliases/{alias}",
    response_model=AliasPublic,
    summary="Point an alias at a version",
    responses={409: {"description": "`production` asked for a version registered as not fit for use"}},
)
def set_alias(name: str, alias: str, body: AliasUpdate, session: SessionDep, principal: StaffPrincipal) -> AliasPublic:
    return AliasPublic.model_validate(registry.set_alias(session, name, alias, body.version, actor=principal.id))


@router.get("/{name}/aliases/history", response_model=list[AliasEventPublic], summary="Every alias move")
def alias_history(name: str, session: SessionDep, _: StaffPrincipal) -> list[AliasEventPublic]:
    registry.require_model(session, name)
    return [AliasEventPublic.model_validate(e) for e in registry.alias_history(session, name)]


@router.get(
    "/{name}/versions/{version}/threshold",
    response_model=ThresholdPublic,
    summary="A version's effective operating threshold and its validation figures",
)
def get_threshold(
    name: str, version: VersionPath, session: SessionDep, serving: ServingDep, _: AnyPrincipal
) -> ThresholdPublic:
    return _threshold_public(session, serving, registry.get_version(session, name, version))


@router.put(
    "/{name}/versions/{version}/threshold",
    response_model=ThresholdPublic,
    summary="Change a version's operating threshold (recorded with who, when, old, new and why)",
    description="Every later prediction from this version uses the new threshold; the registered artifact "
    "is never rewritten and keeps the threshold training chose. The change is in `…/threshold/history`.",
)
def set_threshold(
    name: str,
    version: VersionPath,
    body: ThresholdUpdate,
    session: SessionDep,
    serving: ServingDep,
    who: StaffPrincipal,
) -> ThresholdPublic:
    row = registry.get_version(session, name, version)
    registry.set_threshold(session, row, body.threshold, reason=body.reason, actor=who.id)
    return _threshold_public(session, serving, row)


@router.get(
    "/{name}/versions/{version}/threshold/history",
    response_model=list[ThresholdEventPublic],
    summary="Every change of a version's operating threshold",
)
def threshold_history(
    name: str, version: VersionPath, session: SessionDep, _: StaffPrincipal
) -> list[ThresholdEventPublic]:
    registry.get_version(session, name, version)
    return [ThresholdEventPublic.model_validate(e) for e in registry.threshold_history(session, name, version)]


def _threshold_public(session: Session, serving: Serving, row: ModelVersion) -> ThresholdPublic:
    predictor = serving.cache.get(row.id, serving.storage.resolve(row.artifact_path))
    op, _ = registry.operating_point(session, row, predictor.artifact, storage=serving.storage)
    return ThresholdPublic(
        model=row.model_name,
        version=row.version,
        threshold=row.threshold,
        artifact_threshold=predictor.artifact.threshold,
        operating_point=op,
    )


@router.post(
    "/{name}/predict",
    response_model=PredictionPublic,
    summary="Classify one X-ray (DICOM, PNG or JPEG)",
    description="Uses the `production` alias by default (the newest version fit for use while there is none); "
    "`version` or `alias` choose another (a version not fit for use answers with a warning). The label is "
    "withheld for a film out of distribution unless `label_when_ood=true`. `heatmap=true` adds a Grad-CAM "
    "of the predicted class (or `heatmap_class`) at the film's size; `heatmap_format=array` adds the raw map. "
    "`tta=true` averages the logits over a few anatomy-safe variants of the film (zoom, shift; no flips).",
    responses={
        404: {"description": "unknown model, version or alias"},
        409: {"description": "no version of the model is fit for use (ask for one explicitly)"},
        413: {"description": "image larger than HILUM_MAX_IMAGE_BYTES"},
        422: {"description": "not a usable image (the reason is named), or an unknown heatmap_class"},
    },
)
async def predict(
    name: str,
    file: Annotated[UploadFile, File(description="the X-ray: DICOM, PNG or JPEG")],
    session: SessionDep,
    serving: ServingDep,
    principal: AnyPrincipal,
    version_field: Annotated[int | None, Form(alias="version", ge=1, le=MAX_DB_INT)] = None,
    version: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
    alias: Annotated[str | None, Query(max_length=64)] = None,
    label_when_ood: LabelWhenOod = False,
    heatmap: Annotated[bool, Query(description="add a Grad-CAM heatmap of one class at the film's size")] = False,
    heatmap_class: Annotated[
        str | None, Query(max_length=200, description="the class the heatmap explains (default: the predicted one)")
    ] = None,
    heatmap_format: Annotated[
        Literal["png", "array"], Query(description="`array` adds the raw map (float16, H x W, base64)")
    ] = "png",
    tta: Tta = False,
) -> PredictionPublic:
    started = time.perf_counter()
    resolved = registry.resolve(session, name, version=version_field or version, alias=alias)
    data = await read_upload(file, max_bytes=serving.max_image_bytes)
    options = predictions.Options(
        label_when_ood=label_when_ood,
        heatmap=heatmap,
        heatmap_class=heatmap_class,
        heatmap_array=heatmap_format == "array",
        tta=tta,
    )
    return await predictions.predict_and_record(
        session, resolved, data, serving=serving, options=options, key_id=principal.id, started=started
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
    serving: ServingDep,
    principal: AnyPrincipal,
    version: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
    alias: Annotated[str | None, Query(max_length=64)] = None,
    label_when_ood: LabelWhenOod = False,
    tta: Tta = False,
) -> BatchPrediction:
    resolved = registry.resolve(session, name, version=version, alias=alias)
    read = [(f.filename or "file", await f.read(serving.max_image_bytes + 1)) for f in files]
    items = predictions.batch_items(read, serving=serving)
    options = predictions.Options(label_when_ood=label_when_ood, tta=tta)
    return await predictions.predict_batch(
        session, resolved, items, serving=serving, options=options, key_id=principal.id
    )


@router.get("/{name}/versions/{version}/card", response_model=ModelCard, summary="The model card of a version")
def model_card(name: str, version: VersionPath, session: SessionDep, storage: StorageDep, _: AnyPrincipal) -> ModelCard:
    return cards.model_card(session, storage, registry.get_version(session, name, version))


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=FileResponse,
    summary="Download a version as a self-contained artifact (PyTorch state dict + metadata)",
)
def download_artifact(
    name: str, version: VersionPath, session: SessionDep, storage: StorageDep, _: StaffPrincipal
) -> FileResponse:
    row = registry.get_version(session, name, version)
    return FileResponse(
        storage.resolve(row.artifact_path), media_type="application/octet-stream", filename=f"{name}-v{version}.pt"
    )


@router.get(
    "/{name}/versions/{version}/onnx",
    response_class=FileResponse,
    summary="Download a version exported to ONNX (calibrated probabilities out)",
)
def download_onnx(
    name: str, version: VersionPath, session: SessionDep, storage: StorageDep, _: StaffPrincipal
) -> FileResponse:
    row = registry.get_version(session, name, version)
    return FileResponse(
        cards.onnx_file(storage, row), media_type="application/octet-stream", filename=f"{name}-v{version}.onnx"
    )
