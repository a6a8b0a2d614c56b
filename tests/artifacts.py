"""A tiny, untrained classifier artifact for tests that need a real ``model.pt`` but no training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.artifact import ClassifierArtifact
from models.backbones import create_backbone, model_args

CLASSES = ["NORMAL", "PNEUMONIA"]


def tiny_artifact(
    path: Path,
    *,
    backbone: str = "test_resnet",
    class_names: list[str] | None = None,
    image_size: int = 32,
    threshold: float | None = 0.5,
    seed: int | None = 0,
    **fields: Any,
) -> Path:
    """Save an untrained test_resnet artifact (mean 0.5, std 0.25) at ``path``; ``fields`` override the rest."""
    classes = list(class_names or CLASSES)
    if seed is not None:
        torch.manual_seed(seed)
    # test_resnet weights whatever ``backbone`` says: a test of a mislabelled artifact wants exactly that.
    model = create_backbone("test_resnet", weights="none", num_classes=len(classes))
    values: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "backbone": backbone,
        "model_args": model_args(backbone, len(classes)),
        "class_names": classes,
        "image_size": image_size,
        "mean": 0.5,
        "std": 0.25,
        "positive_class": "PNEUMONIA" if "PNEUMONIA" in classes else None,
        "threshold": threshold,
    }
    ClassifierArtifact(**{**values, **fields}).save(path)
    return path
