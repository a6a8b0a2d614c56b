"""Domain errors raised by the service layer; the app turns them into JSON 4xx answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


class ServiceError(Exception):
    """An error with an HTTP status and a message that names the problem."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Invalid(ServiceError):
    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


class UnsupportedMedia(ServiceError):
    status_code = 415


class Unavailable(ServiceError):
    status_code = 503


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 body for pydantic/FastAPI validation errors: one readable ``detail`` plus the ``errors`` list.

    Only ``loc``, ``msg`` and ``type`` are kept (never the rejected ``input``, which may be large or private).
    """
    items = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "value_error")),
        }
        for e in errors
    ]
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else str(e["msg"]) for e in items]
    return {"detail": "; ".join(parts) or "invalid request", "errors": items}


def install_error_handlers(app: FastAPI) -> None:
    """Every error answer is ``{"detail": str}`` (422 adds ``errors``): see service/schemas/common.py."""

    _document_error_bodies(app)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.message})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=validation_body(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


def _document_error_bodies(app: FastAPI) -> None:
    """In the OpenAPI document, every 422 is ``ErrorBody`` (not FastAPI's list-shaped default), and an
    error answer a ``/v1`` route describes without a body gets ``ErrorBody``."""
    build = app.openapi
    default_422 = "#/components/schemas/HTTPValidationError"

    def openapi() -> dict[str, Any]:
        schema = build()
        if "ErrorBody" in schema.get("components", {}).get("schemas", {}):
            body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    for code, answer in operation.get("responses", {}).items():
                        refs = answer.get("content", {}).get("application/json", {}).get("schema", {})
                        if code == "422" and refs.get("$ref") == default_422:
                            answer["content"] = body
                        elif path.startswith("/v1/") and code[:1] in ("4", "5") and "content" not in answer:
                            answer["content"] = body
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
