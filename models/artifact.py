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

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half an artifact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("model_args", "operating_point", "metrics", "metadata"):
            payload[key] = to_plain(payload[key])
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
