"""Typed inputs and outputs of a training job."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Strategy = Literal["frozen", "full", "gradual"]
ClassBalance = Literal["weighted_loss", "sampler", "none"]
STRATEGIES: tuple[str, ...] = ("frozen", "full", "gradual")
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
    early_stopping_patience: int | None = None
    augment: bool = True  # ignored by "frozen": its features are computed once, un-augmented
    device: str = "auto"
    precision: str = "auto"  # CUDA mixed precision: auto (bf16 where supported, else fp16), bf16, fp16 or fp32
    grad_clip: float = 1.0
    cache_features: bool = True  # frozen: backbone features computed once per image
    bootstrap_resamples: int = 1000

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if self.class_balance not in CLASS_BALANCES:
            raise ValueError(f"unknown class_balance {self.class_balance!r}; use one of {', '.join(CLASS_BALANCES)}")
        if self.epochs < 1 or self.image_size < 8 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1 and image_size >= 8")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError("target_sensitivity must be in (0, 1]")
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
        return cls(**d)


@dataclass(frozen=True)
class TrainData:
    """Labelled canonical PNG paths per split; labels index into ``class_names``."""

    class_names: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    test: list[tuple[Path, int]]


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
