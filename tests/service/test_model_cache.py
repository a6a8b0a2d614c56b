from __future__ import annotations

from pathlib import Path

import timm
import torch

from models.artifact import ClassifierArtifact
from service.model_cache import ModelCache, model_bytes


def write_artifact(path: Path) -> Path:
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=2)
    artifact = ClassifierArtifact(
        state_dict={k: v.clone() for k, v in model.state_dict().items()},
        backbone="test_resnet",
        model_args={"num_classes": 2, "in_chans": 1},
        class_names=["NORMAL", "PNEUMONIA"],
        image_size=32,
        mean=0.45,
        std=0.225,
        temperature=1.0,
        positive_class="PNEUMONIA",
        threshold=0.5,
        operating_point={},
        metrics={},
        metadata={},
    )
    artifact.save(path)
    return path


def test_loaded_once_and_bounded_by_count_and_memory(tmp_path: Path) -> None:
    path = write_artifact(tmp_path / "m.pt")
    cache = ModelCache(max_models=2)
    first = cache.get("v1", path)
    assert cache.get("v1", path) is first
    size = model_bytes(first)
    assert size > 0
    cache.get("v2", path)
    cache.get("v3", path)
    assert len(cache) == 2 and "v1" not in cache
    small = ModelCache(max_models=10, max_bytes=int(size * 1.5))
    small.get("a", path)
    small.get("b", path)
    assert len(small) == 1 and "b" in small
    assert torch.is_tensor(next(iter(first.model.parameters())))
