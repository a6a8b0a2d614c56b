"""Calibrated predictions from a classifier artifact, with the same preprocessing as training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.artifact import ClassifierArtifact
from pipelines.preprocess import to_model_input


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    positive_class: str | None
    threshold: float | None


class Predictor:
    """A loaded model plus its artifact; load once, call ``predict`` many times."""

    def __init__(self, artifact: ClassifierArtifact, *, device: str = "cpu") -> None:
        self.artifact = artifact
        self.device = torch.device(device)
        self.model = artifact.build_model().to(self.device).eval()

    @classmethod
    def load(cls, artifact_path: Path, *, device: str = "cpu") -> Predictor:
        return cls(ClassifierArtifact.load(artifact_path), device=device)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated class probabilities, (N, C), from one forward pass over the whole batch."""
        a = self.artifact
        if not images:
            return np.zeros((0, a.num_classes), dtype=np.float32)
        x = torch.stack([to_model_input(im, image_size=a.image_size, mean=a.mean, std=a.std) for im in images])
        with torch.inference_mode():
            logits = self.model(x.to(self.device)).float()
            probs = torch.softmax(logits / a.temperature, dim=1)
        return probs.cpu().numpy()

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        a = self.artifact
        out = []
        for p in self.probabilities(images):
            probs = {name: float(v) for name, v in zip(a.class_names, p, strict=True)}
            if a.positive_class is not None and a.threshold is not None and a.num_classes == 2:
                negative = next(c for c in a.class_names if c != a.positive_class)
                label = a.positive_class if probs[a.positive_class] >= a.threshold else negative
            else:
                label = a.class_names[int(np.argmax(p))]
            out.append(
                Prediction(label=label, probabilities=probs, positive_class=a.positive_class, threshold=a.threshold)
            )
        return out
