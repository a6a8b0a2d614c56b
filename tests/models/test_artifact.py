"""ClassifierArtifact: one unit, plain tensors and builtins, rebuilt without pickled modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import ClassifierArtifact
from models.backbones import create_backbone, model_args


def make_artifact() -> ClassifierArtifact:
    torch.manual_seed(0)
    model = create_backbone("test_efficientnet", weights="none", num_classes=2)
    return ClassifierArtifact(
        state_dict=model.state_dict(),
        backbone="test_efficientnet",
        model_args=model_args("test_efficientnet", 2),
        class_names=["NORMAL", "PNEUMONIA"],
        image_size=32,
        mean=0.449,
        std=0.226,
        temperature=1.7,
        positive_class="PNEUMONIA",
        threshold=0.31,
        operating_point={"sensitivity": 0.96, "specificity": 0.7},
        metrics={"val": {"auroc": np.float64(0.9)}},
        metadata={"created_at": "now", "versions": torch.__version__},
    )


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    art = make_artifact()
    art.save(tmp_path / "model.pt")
    raw = torch.load(tmp_path / "model.pt", weights_only=True)  # no pickled classes inside
    assert raw["backbone"] == "test_efficientnet" and not any(isinstance(v, torch.nn.Module) for v in raw.values())
    loaded = ClassifierArtifact.load(tmp_path / "model.pt")
    assert loaded.class_names == art.class_names and loaded.threshold == 0.31 and loaded.temperature == 1.7
    assert loaded.metrics == {"val": {"auroc": 0.9}}
    x = torch.randn(3, 1, 32, 32)
    with torch.inference_mode():
        original = create_backbone("test_efficientnet", weights="none", num_classes=2)
        original.load_state_dict(art.state_dict)
        assert torch.equal(original.eval()(x), loaded.build_model()(x))


def test_rejects_other_files(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="not a Hilum classifier artifact"):
        ClassifierArtifact.load(tmp_path / "ckpt.pt")


def test_an_artifact_without_the_trust_fields_loads_with_defaults(tmp_path: Path) -> None:
    """An artifact saved before issue 9 (no preprocessing/calibration/conformal/ood/fitness/pretrained)."""
    import dataclasses

    art = make_artifact()
    payload = {f.name: getattr(art, f.name) for f in dataclasses.fields(art)}
    for new in (
        "preprocessing",
        "calibration",
        "conformal",
        "ood",
        "pretrained",
        "weights",
        "fitness",
        "explanation",
        "val_predictions",
    ):
        payload.pop(new)
    payload["metadata"] = {"weights": "none"}
    payload["metrics"] = {"val": {"auroc": 0.9}}
    payload["format"] = "hilum.classifier/1"
    torch.save(payload, tmp_path / "old.pt")
    loaded = ClassifierArtifact.load(tmp_path / "old.pt")
    assert loaded.conformal == {} and loaded.ood == {} and loaded.preprocessing == {}
    assert loaded.fit_for_use and loaded.fitness["reasons"] == ["not assessed"] and not loaded.fitness["assessed"]
    assert loaded.pretrained is False and loaded.weights == "none"
    assert make_artifact().pretrained is None  # no metadata: unknown


def test_trust_fields_round_trip_with_weights_only(tmp_path: Path) -> None:
    import dataclasses

    art = dataclasses.replace(
        make_artifact(),
        conformal={"method": "split-conformal (LAC)", "coverage": 0.9, "qhat": np.float64(0.7), "n_cal": 50},
        ood={"method": "mahalanobis", "means": torch.zeros(2, 4), "precision": torch.eye(4), "threshold": 3.5},
        pretrained=True,
        weights="imagenet",
        fitness={"fit_for_use": False, "assessed": True, "reasons": ["no skill"]},
    )
    art.save(tmp_path / "model.pt")
    loaded = ClassifierArtifact.load(tmp_path / "model.pt")
    assert loaded.conformal["qhat"] == 0.7 and isinstance(loaded.ood["precision"], torch.Tensor)
    assert torch.equal(loaded.ood["precision"], torch.eye(4)) and loaded.ood["threshold"] == 3.5
    assert loaded.pretrained is True and loaded.weights == "imagenet" and not loaded.fit_for_use
