"""Pretrained weights files that ops register for air-gapped fine-tuning."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from hilum.audit import record_audit
from hilum.storage import Storage
from hilum.tables import WeightsFile
from hilum.weights import register_weights_file
from service.errors import Invalid


def register_upload(
    session: Session,
    storage: Storage,
    *,
    upload: Path,
    filename: str | None,
    backbone: str | None,
    actor: str | None = None,
) -> WeightsFile:
    try:
        row = register_weights_file(session, storage, upload, filename=filename or upload.name, backbone=backbone)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    finally:
        upload.unlink(missing_ok=True)
    record_audit(
        session,
        actor=actor,
        action="weights.register",
        target=f"weights:{row.id}",
        details={"backbone": row.backbone, "filename": row.filename, "sha256": row.sha256},
    )
    session.commit()
    return row


def list_weights(session: Session) -> list[WeightsFile]:
    return list(session.scalars(select(WeightsFile).order_by(WeightsFile.created_at)))
