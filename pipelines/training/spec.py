"""Typed inputs and outputs of a training job."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Strategy = Literal["frozen", "full", "gradual"]
ClassBalance = Literal["weighted_loss", "sampler", "none"]
Augment = Literal["scanner", "basic", "none"]
EarlyStoppingMetric = Literal["auroc", "auroc_loss"]
STRATEGIES: tuple[str, ...] = ("frozen", "full", "gradual")
AUGMENTS: tuple[str, ...] = ("scanner", "basic", "none")
EARLY_STOPPING_METRICS: tuple[str, ...] = ("auroc", "auroc_loss")

# Spec overrides that give back the recipe before issue 12 (mild augmentation, hard labels, raw weights,
# selection on validation AUROC alone, no early stopping, the threshold from the point estimate of
# sensitivity). A stored spec that lacks a recipe field predates it, so ``from_dict`` fills that field from here.
BASELINE_RECIPE: dict = {
    "augment": "basic",
    "label_smoothing": 0.0,
    "ema_decay": None,
    "early_stopping_patience": None,
    "early_stopping_metric": "auroc",
    "sensitivity_confidence": 0.0,
}
CLASS_BALANCES: tuple[str, ...] = ("weighted_loss", "sampler", "none")


@dataclass(frozen=True)
class TrainSpec:
    """A training recipe; every field is JSON-able so it round-trips through the job row and checkpoints."""

    backbone: str
    strategy: Strategy
    epochs: int
    image_size: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    seed: int = 0
    target_sensitivity: float = 0.95
    unfreeze_every: int = 1  # gradual: one more group every N epochs
    layer_decay: float = 0.75  # lr multiplier per group from the top down
    class_balance: ClassBalance = "weighted_loss"
    early_stopping_patience: int | None = 3  # epochs without improvement (see early_stopping_metric); None = off
    early_stopping_metric: EarlyStoppingMetric = "auroc_loss"
    augment: Augment = "scanner"  # ignored by "frozen": its features are computed once, un-augmented
    label_smoothing: float = 0.1
    ema_decay: float | None = 0.998  # weights' moving average, evaluated and kept as the model; None = off
    device: str = "auto"
    precision: str = "auto"  # CUDA mixed precision: auto (bf16 where supported, else fp16), bf16, fp16 or fp32
    grad_clip: float = 1.0
    cache_features: bool = True  # frozen: backbone features computed once per image
    bootstrap_resamples: int = 1000
    sensitivity_confidence: float = 0.95  # one-sided level of the threshold's sensitivity bound; 0 = point rule

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):  # stored before augmentation had policies: True was today's "basic"
            object.__setattr__(self, "augment", "basic" if self.augment else "none")
        if self.augment not in AUGMENTS:
            raise ValueError(f"unknown augment {self.augment!r}; use one of {', '.join(AUGMENTS)}")
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise ValueError(
                f"unknown early_stopping_metric {self.early_stopping_metric!r}; "
                f"use one of {', '.join(EARLY_STOPPING_METRICS)}"
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 (or None to train every epoch)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in (0, 1) (or None for no moving average)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if self.class_balance not in CLASS_BALANCES:
            raise ValueError(f"unknown class_balance {self.class_balance!r}; use one of {', '.join(CLASS_BALANCES)}")
        if self.epochs < 1 or self.image_size < 8 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1 and image_size >= 8")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError("target_sensitivity must be in (0, 1]")
        if not 0.0 <= self.sensitivity_confidence < 1.0:
            raise ValueError("sensitivity_confidence must be in [0, 1); 0 uses the point estimate")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"unknown precision {self.precision!r}; use auto, bf16, fp16 or fp32")
        if self.unfreeze_every < 1 or not 0.0 < self.layer_decay <= 1.0:
            raise ValueError("unfreeze_every must be >= 1 and layer_decay in (0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainSpec fields: {', '.join(sorted(unknown))}")
        return cls(**{**{k: v for k, v in BASELINE_RECIPE.items() if k not in d}, **d})


@dataclass(frozen=True)
class TrainData:
    """Labelled canonical PNG paths per split; labels index into ``class_names``."""

    class_names: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    # Held out from model selection to fit temperature, threshold, conformal and OOD; may be empty.
    calibration: list[tuple[Path, int]] = field(default_factory=list)


class TrainingCancelled(Exception):
    """``should_stop()`` asked the job to stop; the last epoch checkpoint is kept for a later resume."""


@dataclass(frozen=True)
class TrainResult:
    artifact_path: Path
    best_epoch: int
    val_metrics: dict
    test_metrics: dict
    report_path: Path | None


def positive_class_index(class_names: list[str]) -> int | None:
    """Binary: the class that is not NORMAL when the other one is, else the second sorted name; None otherwise."""
    if len(class_names) != 2:
        return None
    lowered = [c.lower() for c in class_names]
    if "normal" in lowered:
        return 1 - lowered.index("normal")
    return class_names.index(sorted(class_names)[1])
