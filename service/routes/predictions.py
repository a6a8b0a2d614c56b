from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import AdminPrincipal, SessionDep
from service.domain import models as domain
from service.schemas.models import PredictionRecord

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])


@router.get("", response_model=list[PredictionRecord], summary="The prediction log (admin)")
def list_predictions(
    session: SessionDep,
    _: AdminPrincipal,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PredictionRecord]:
    return [PredictionRecord.model_validate(p) for p in domain.list_predictions(session, model=model, limit=limit)]
