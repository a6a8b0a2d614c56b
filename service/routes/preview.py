"""The film as the model sees it: an upload decoded by the same code as ingestion and prediction, as a PNG."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pipelines.imaging import ImageRejected
from pipelines.ingest import encode_png
from pipelines.model_input import decode_checked
from service.deps import AnyPrincipal, SettingsDep
from service.errors import Invalid
from service.uploads import read_upload

router = APIRouter(prefix="/v1/preview", tags=["models"])


def render(data: bytes, *, max_side: int, chest_check: bool) -> tuple[bytes, dict[str, str]]:
    """PNG bytes of the canonical grayscale film and headers describing it; Invalid with the plain reason."""
    try:
        decoded = decode_checked(data, max_side=max_side, chest_check=chest_check)
    except ImageRejected as exc:
        raise Invalid(str(exc)) from None
    height, width = decoded.pixels.shape[:2]
    headers = {
        "X-Image-Width": str(width),
        "X-Image-Height": str(height),
        "X-Original-Size": f"{decoded.width}x{decoded.height}",
        "X-Source-Format": decoded.source_format,
        "Cache-Control": "no-store",  # pixels of a patient's film: never kept by a browser cache
    }
    return encode_png(decoded.pixels), headers


@router.post(
    "",
    response_class=Response,
    summary="The canonical film (grayscale PNG) decoded exactly as ingestion and prediction decode it",
    description="DICOM windowing, MONOCHROME1 and bit depth handled as for training; the chest-film check "
    "applies. A refused file answers 422 with the reason in plain words.",
    responses={200: {"content": {"image/png": {}}}, 422: {"description": "not a usable chest film"}},
)
async def preview(
    file: Annotated[UploadFile, File(description="the X-ray: DICOM, PNG or JPEG")],
    settings: SettingsDep,
    _: AnyPrincipal,
    chest_check: Annotated[bool, Query(description="refuse DICOMs that are not chest radiographs")] = True,
) -> Response:
    data = await read_upload(file, max_bytes=settings.max_image_bytes)
    png, headers = await run_in_threadpool(render, data, max_side=settings.max_image_side, chest_check=chest_check)
    return Response(png, media_type="image/png", headers=headers)
