"""Weights references: "none", "imagenet" (timm's hub) or the id of a registered local weights file."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from hilum.db import session_scope
from hilum.settings import Settings
from hilum.storage import Storage
from hilum.tables import WeightsFile, new_id
from models.backbones import KNOWN_BACKBONES
from models.weights import LocalWeights, WeightsSource, validate_weights_file

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def resolve_weights(settings: Settings, ref: str) -> WeightsSource:
    if ref in ("none", "imagenet"):
        return ref  # type: ignore[return-value]
    with session_scope(settings.resolved_database_url) as session:
        row = session.get(WeightsFile, ref)
        if row is None:
            raise ValueError(f"weights '{ref}' are not registered")
        return LocalWeights(Storage(settings.data_dir).resolve(row.path))


def register_weights_file(
    session: Session, storage: Storage, source: Path, *, filename: str, backbone: str | None
) -> WeightsFile:
    """Check a state dict fits ``backbone`` and copy it into the store. Raises ValueError naming the problem."""
    if not backbone:
        raise ValueError(f"say which backbone these weights are for; known backbones: {', '.join(KNOWN_BACKBONES)}")
    if backbone not in KNOWN_BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; known backbones: {', '.join(KNOWN_BACKBONES)}")
    suffix = Path(filename).suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise ValueError(f"'{filename}' is not a weights file: expected {', '.join(WEIGHTS_SUFFIXES)}")
    weights_id = new_id()
    target = storage.root / "weights" / f"{weights_id}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    # validate under the final suffix: .safetensors and torch files load differently
    shutil.copyfile(source, target)
    try:
        info = validate_weights_file(target, backbone)
    except ValueError as exc:  # name the file the operator sent, not our stored copy
        target.unlink(missing_ok=True)
        raise ValueError(str(exc).replace(target.name, Path(filename).name)) from exc
    except Exception:
        target.unlink(missing_ok=True)
        raise
    row = WeightsFile(
        id=weights_id,
        backbone=backbone,
        filename=filename,
        path=storage.relative(target),
        sha256=info["sha256"],
        format=info["format"],
    )
    session.add(row)
    session.flush()
    return row
