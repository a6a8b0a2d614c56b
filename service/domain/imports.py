"""Model import: register an artifact trained at another site as a new version, after checking it is one of ours."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hilum.audit import record_audit
from hilum.registry import register_imported
from hilum.storage import Storage
from hilum.tables import ModelVersion
from models.artifact import ARTIFACT_FORMAT, ClassifierArtifact
from models.backbones import KNOWN_BACKBONES
from pipelines.training.warm_start import SHA_SHOWN, file_sha256
from service.domain.jobs import check_model_classes
from service.errors import Conflict, Invalid
from service.schemas.jobs import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)


def import_model(
    session: Session, storage: Storage, *, upload: Path, model_name: str | None, actor: str | None
) -> ModelVersion:
    """Validate the uploaded artifact, store it under the data dir and register it; the upload is removed."""
    try:
        if not model_name or not re.match(MODEL_NAME_PATTERN, model_name):
            raise Invalid(f"model_name must match {MODEL_NAME_PATTERN} (e.g. 'pneumonia'); got {model_name!r}")
        artifact = read_artifact(upload)
        check_model_classes(session, model_name, list(artifact.class_names), source="the imported artifact")
        sha = file_sha256(upload)
        row = register_imported(session, storage, model_name, upload, source=f"imported:{sha[:SHA_SHOWN]}")
        record_audit(
            session,
            actor=actor,
            action="model.import",
            target=f"model:{model_name}/v{row.version}",
            details={"sha256": sha, "backbone": artifact.backbone, "class_names": list(artifact.class_names)},
        )
        try:
            session.commit()
        except IntegrityError as exc:  # another registration took the same version number first
            session.rollback()
            raise Conflict(f"model '{model_name}' gained a version meanwhile; import again") from exc
        return row
    finally:
        upload.unlink(missing_ok=True)


def read_artifact(path: Path) -> ClassifierArtifact:
    """Load safely (``weights_only``) and check what serving needs; ``Invalid`` names the first problem."""
    try:
        artifact = ClassifierArtifact.load(path)
    except ValueError as exc:
        raise Invalid(f"the file is not a Hilum model artifact (format {ARTIFACT_FORMAT}): {exc}") from exc
    except Exception as exc:  # not a torch file, truncated, or holding objects weights_only refuses
        raise Invalid(
            f"the file is not a readable Hilum model artifact ({type(exc).__name__}); upload the model.pt that "
            "GET /v1/models/{name}/versions/{v}/artifact returns"
        ) from exc
    if artifact.backbone not in KNOWN_BACKBONES:
        raise Invalid(f"unknown backbone '{artifact.backbone}'; known backbones: {', '.join(KNOWN_BACKBONES)}")
    names = artifact.class_names
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise Invalid(f"the artifact's class_names must list at least two class names; got {names!r}")
    if len(set(names)) != len(names):
        raise Invalid(f"the artifact's class_names repeat a name: {', '.join(names)}")
    numbers = {"image_size": artifact.image_size, "mean": artifact.mean, "std": artifact.std}
    bad = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0]
    if bad:
        raise Invalid(f"the artifact's {', '.join(bad)} must be positive numbers; got {numbers}")
    if not isinstance(artifact.preprocessing, dict) or not artifact.preprocessing:
        raise Invalid("the artifact has no preprocessing record (max_side, image_size, mean, std): serving needs it")
    try:
        artifact.build_model()
    except Exception as exc:  # wrong shapes or missing tensors for the named backbone
        raise Invalid(
            f"the artifact's weights do not fit a {artifact.backbone} with {len(names)} classes: {str(exc)[:300]}"
        ) from exc
    return artifact
