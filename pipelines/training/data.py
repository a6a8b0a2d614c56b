"""Decode-once image cache, cheap X-ray augmentation on tensors, and seeded batch orders."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines.preprocess import load_canonical, normalise, resize_square


@dataclass(frozen=True)
class ImageSet:
    """A split decoded once: uint8 images (N, S, S) at the job's image size, and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


def _decode(path: Path, image_size: int) -> torch.Tensor:
    return resize_square(load_canonical(path), image_size)


def load_split(items: Sequence[tuple[Path, int]], image_size: int, *, workers: int | None = None) -> ImageSet:
    """Decode each canonical PNG exactly once per job (Pillow releases the GIL, so one thread per core helps)."""
    workers = workers or max(4, os.cpu_count() or 1)
    if not items:
        return ImageSet(torch.zeros((0, image_size, image_size), dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda it: _decode(Path(it[0]), image_size), items))
    return ImageSet(torch.stack(images), torch.tensor([int(y) for _, y in items], dtype=torch.long))


def data_fingerprint(class_names: Sequence[str], splits: dict[str, Sequence[tuple[Path, int]]]) -> str:
    """A hash of classes and (path, label) per split: a checkpoint only resumes on the same data."""
    h = hashlib.sha256(repr(list(class_names)).encode())
    for name in sorted(splits):
        for path, label in splits[name]:
            h.update(f"{name}|{path}|{label}\n".encode())
    return h.hexdigest()


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=num_classes).to(torch.float32)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes); absent classes weigh 0."""
    counts = class_counts(labels, num_classes)
    present = counts > 0
    w = torch.zeros(num_classes)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    return w


def epoch_order(labels: torch.Tensor, *, seed: int, epoch: int, balanced: bool) -> torch.Tensor:
    """Indices for one epoch, a pure function of (seed, epoch) so a resumed job sees the same batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = labels.numel()
    if not balanced:
        return torch.randperm(n, generator=g)
    counts = torch.bincount(labels).to(torch.float64)
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, n, replacement=True, generator=g)


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    # Drop a trailing batch of one: BatchNorm cannot train on a single sample.
    out = [order[i : i + batch_size] for i in range(0, order.numel(), batch_size)]
    if len(out) > 1 and out[-1].numel() == 1:
        out.pop()
    return out


def augment(u8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Chest X-ray augmentation on a uint8 batch (B, S, S) -> float (B, 1, S, S) in [0, 1].

    Small rotations (+-10 deg), scale 0.9-1.1, small shifts, brightness/contrast jitter. No flips: a
    vertical flip is anatomically impossible and a horizontal one moves the heart to the wrong side.
    """
    b = u8.shape[0]
    x = u8[:, None].to(torch.float32) / 255.0
    # The random parameters come from the CPU generator (the same draws on every device, so a resumed or
    # moved job sees the same augmentation); the pixel work runs where the batch is (the GPU when there is one).
    angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(10.0)
    scale = 0.9 + torch.rand(b, generator=g) * 0.2
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * 0.05
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness = ((torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * 0.1).to(x.device)
    contrast = (0.9 + torch.rand(b, 1, 1, 1, generator=g) * 0.2).to(x.device)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def make_batch(u8: torch.Tensor, *, mean: float, std: float, g: torch.Generator | None) -> torch.Tensor:
    """Model input (B, 1, S, S): augmented when a generator is given, else exactly ``to_model_input``."""
    if g is None:
        return normalise(u8[:, None], mean=mean, std=std)
    return (augment(u8, g) - mean) / std
