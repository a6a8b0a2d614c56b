from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from hilum.tables import Prediction
from service.deps import AdminPrincipal, AnyPrincipal, SessionDep
from service.domain import predictions as domain
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


@router.get("/mine", response_model=list[PredictionRecord], summary="The caller's own recent predictions (any role)")
def my_predictions(
    session: SessionDep, principal: AnyPrincipal, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[PredictionRecord]:
    query = select(Prediction).where(Prediction.key_id == principal.id).order_by(Prediction.created_at.desc())
    return [PredictionRecord.model_validate(p) for p in session.scalars(query.limit(limit))]
