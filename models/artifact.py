"""The classifier artifact: weights, preprocessing, classes, calibration, threshold and metrics, as one unit."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.backbones import create_backbone

ARTIFACT_FORMAT = "hilum.classifier/1"
FITNESS_NOT_ASSESSED = {"fit_for_use": True, "assessed": False, "reasons": ["not assessed"]}
PLAIN_FIELDS = (
    "model_args",
    "operating_point",
    "metrics",
    "metadata",
    "preprocessing",
    "calibration",
    "conformal",
    "fitness",
    "explanation",
    "val_predictions",
)


def to_plain(value: object) -> object:
    """JSON-able builtins only (numpy scalars, versions, paths become float/int/str), so ``weights_only`` loads it."""

    def default(o: object) -> object:
        if hasattr(o, "item"):
            return o.item()  # type: ignore[attr-defined]
        if hasattr(o, "tolist"):
            return o.tolist()  # type: ignore[attr-defined]
        return str(o)

    return json.loads(json.dumps(value, default=default))


@dataclass(frozen=True)
class ClassifierArtifact:
    """Everything serving needs; saved as plain tensors and builtins (``torch.load(weights_only=True)`` loads it)."""

    state_dict: dict[str, torch.Tensor]
    backbone: str
    model_args: dict
    class_names: list[str]
    image_size: int
    mean: float
    std: float
    temperature: float = 1.0
    positive_class: str | None = None
    threshold: float | None = None
    operating_point: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    # Issue 9 (all optional: an older artifact loads with "not there" defaults).
    preprocessing: dict = field(default_factory=dict)  # max_side, image_size, mean, std, interpolation, pad, ...
    calibration: dict = field(default_factory=dict)  # method, temperature, applied, reason, nll/ece before/after
    conformal: dict = field(default_factory=dict)  # method, coverage, qhat, n_cal, empirical_test_coverage
    ood: dict = field(default_factory=dict)  # method, means/precision tensors, threshold, val_fpr
    pretrained: bool | None = None  # None: the artifact predates the flag and its metadata does not say
    weights: str | None = None  # "none", "imagenet", "local:<id>"
    fitness: dict = field(default_factory=dict)  # fit_for_use, reasons
    explanation: dict = field(default_factory=dict)  # heatmap scale: per-class Grad-CAM reference values
    val_predictions: dict = field(default_factory=dict)  # p_pos, is_pos (or probs, labels) on validation

    def __post_init__(self) -> None:
        weights = self.weights if self.weights is not None else (self.metadata or {}).get("weights")
        if weights is not None:
            object.__setattr__(self, "weights", str(weights))
            if self.pretrained is None:
                object.__setattr__(self, "pretrained", str(weights) != "none")
        if not self.fitness:
            object.__setattr__(self, "fitness", dict(FITNESS_NOT_ASSESSED))

    @property
    def fit_for_use(self) -> bool:
        return bool(self.fitness.get("fit_for_use", True))

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half an artifact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in PLAIN_FIELDS:
            payload[key] = to_plain(payload[key])
        # ``ood`` holds tensors (means, precision): keep them as tensors, everything else plain.
        payload["ood"] = {
            k: (v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else to_plain(v))
            for k, v in self.ood.items()
        }
        payload["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        payload["format"] = ARTIFACT_FORMAT
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, map_location: str | torch.device = "cpu") -> ClassifierArtifact:
        payload = torch.load(Path(path), map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path} is not a Hilum classifier artifact ({ARTIFACT_FORMAT})")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_model(self) -> nn.Module:
        """Rebuild the network from ``model_args`` (random init, no download) and load the weights strictly."""
        model = create_backbone(
            self.backbone,
            weights="none",
            num_classes=int(self.model_args.get("num_classes", self.num_classes)),
            in_chans=int(self.model_args.get("in_chans", 1)),
        )
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()
