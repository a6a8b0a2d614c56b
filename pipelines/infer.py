"""Calibrated predictions from a classifier artifact, with the same preprocessing as training."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.artifact import ClassifierArtifact
from models.backbones import classifier_of
from models.device import resolve_device, resolve_precision
from pipelines.model_input import model_input, preprocessing_of
from pipelines.training import conformal, ood
from pipelines.tta import VARIANTS, average_logits, tta_batch


@dataclass(frozen=True)
class Prediction:
    """One film's answer. ``prediction_set`` holds every class the conformal set keeps at ``coverage`` (all
    classes: uncertain, refer); ``in_distribution`` is False when the film looks unlike the training films.
    The last five are None for an artifact without conformal or OOD parameters."""

    label: str
    probabilities: dict[str, float]
    positive_class: str | None
    threshold: float | None
    prediction_set: list[str] | None = field(default=None)
    coverage: float | None = None
    in_distribution: bool | None = None
    ood_score: float | None = None
    ood_threshold: float | None = None
    tta: int | None = None  # variants averaged (test-time augmentation); None when off


class Predictor:
    """A loaded model plus its artifact; load once, call ``predict`` many times."""

    def __init__(self, artifact: ClassifierArtifact, *, device: str = "cpu", precision: str = "auto") -> None:
        self.artifact = artifact
        self.device = resolve_device(device)
        self.dtype = resolve_precision(self.device, precision)
        model = artifact.build_model().to(self.device, dtype=self.dtype).eval()
        if self.device.type == "cuda":  # NHWC lets cuDNN pick its tensor-core convolutions
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        # The classifier's input is the pooled penultimate feature vector (the OOD score's input); a permanent
        # hook keeps it per thread, so one forward pass gives logits and features.
        self._captured = threading.local()
        classifier_of(model).register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._captured.features = inputs[0]

    @classmethod
    def load(cls, artifact_path: Path, *, device: str = "cpu", precision: str = "auto") -> Predictor:
        return cls(ClassifierArtifact.load(artifact_path), device=device, precision=precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits for a float32 CPU batch (N, 1, S, S): moved to the device once, in its dtype and layout."""
        x = x.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float()

    def outputs(self, images: Sequence[np.ndarray], *, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities (N, C), penultimate features (N, D)) from one forward pass over the batch.

        With ``tta`` the logits are averaged over ``pipelines.tta.VARIANTS`` before the temperature; the
        features (the OOD score's input) stay those of the film itself.
        """
        a = self.artifact
        if not images:
            return np.zeros((0, a.num_classes), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
        preprocessing = preprocessing_of(a)
        x = torch.stack([model_input(im, preprocessing) for im in images])
        if tta:
            n = x.shape[0]
            logits = self.forward(tta_batch(x))
            features = self._captured.features[:n]  # identity is the first variant
            logits = average_logits(logits, n)
        else:
            logits = self.forward(x)
            features = self._captured.features
        with torch.inference_mode():
            probs = torch.softmax(logits / a.temperature, dim=1)
        return probs.cpu().numpy(), features.float().cpu().numpy()

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated class probabilities, (N, C), from one forward pass over the whole batch."""
        return self.outputs(images)[0]

    def label_for(self, p: np.ndarray, threshold: float | None) -> str:
        """The positive class at or above ``threshold`` (binary with a positive class), else the top class."""
        a = self.artifact
        if a.positive_class is not None and threshold is not None and a.num_classes == 2:
            negative = next(c for c in a.class_names if c != a.positive_class)
            return a.positive_class if float(p[a.class_names.index(a.positive_class)]) >= threshold else negative
        return a.class_names[int(np.argmax(p))]

    def predict(
        self, images: Sequence[np.ndarray], *, threshold: float | None = None, tta: bool = False
    ) -> list[Prediction]:
        """One answer per film; ``threshold`` overrides the artifact's (the registry may hold a changed one);
        ``tta`` averages the logits over a few anatomy-safe variants of each film."""
        a = self.artifact
        threshold = a.threshold if threshold is None else float(threshold)
        probs_all, features = self.outputs(images, tta=tta)
        qhat = a.conformal.get("qhat") if a.conformal else None
        scores = ood.score(a.ood, features) if a.ood and len(images) else None
        out = []
        for i, p in enumerate(probs_all):
            score = None if scores is None else float(scores[i])
            out.append(
                Prediction(
                    label=self.label_for(p, threshold),
                    probabilities={name: float(v) for name, v in zip(a.class_names, p, strict=True)},
                    positive_class=a.positive_class,
                    threshold=threshold,
                    prediction_set=None if qhat is None else conformal.prediction_set(p, a.class_names, float(qhat)),
                    coverage=None if qhat is None else float(a.conformal["coverage"]),
                    in_distribution=None if score is None else bool(score <= float(a.ood["threshold"])),
                    ood_score=score,
                    ood_threshold=None if score is None else float(a.ood["threshold"]),
                    tta=len(VARIANTS) if tta else None,
                )
            )
        return out
