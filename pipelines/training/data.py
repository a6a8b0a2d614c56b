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


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + torch.rand(*shape, generator=g) * (hi - lo)


def _affine(
    x: torch.Tensor, g: torch.Generator, *, degrees: float, scale: tuple[float, float], shift: float
) -> torch.Tensor:
    b = x.shape[0]
    angle = _uniform(g, -1.0, 1.0, b) * math.radians(degrees)
    s = _uniform(g, *scale, b)
    t = _uniform(g, -shift, shift, b, 2)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (pixels) per image; sigma 0 leaves an image unchanged."""
    b, _, _, size = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).to(x.device)
    y = F.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="replicate")  # (1, B, S, S): groups=B
    y = F.conv2d(y, k[:, None, :, None], groups=b)
    y = F.conv2d(y, k[:, None, None, :], groups=b)
    return y.transpose(0, 1)


def _collimation(x: torch.Tensor, g: torch.Generator, *, p_edge: float, max_width: float) -> torch.Tensor:
    """Black or white bands (collimator shutters, burnt-out edges) of up to ``max_width`` on random edges."""
    b, _, h, w = x.shape
    widths = torch.where(torch.rand(b, 4, generator=g) < p_edge, _uniform(g, 0.02, max_width, b, 4), 0.0)
    value = (torch.rand(b, generator=g) < 0.5).float().to(x.device)[:, None, None, None]
    px = (widths * torch.tensor([h, h, w, w])).round().long().to(x.device)  # top, bottom, left, right
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    band = (
        (rows < px[:, 0, None, None])
        | (rows >= h - px[:, 1, None, None])
        | (cols < px[:, 2, None, None])
        | (cols >= w - px[:, 3, None, None])
    )
    return torch.where(band[:, None], value, x)


def scanner_augment(u8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Another scanner's look (and patient) on a uint8 batch (B, S, S) -> float (B, 1, S, S) in [0, 1].

    Geometry: rotation +-10 deg, scale 0.8-1.15 (smaller or larger patients), shifts 6%. Then the exposure and
    detector: a heel-effect ramp, a window/level shift and gamma curve (another look-up table), Gaussian blur
    (another MTF), down-up sampling (another pixel pitch), noise whose grain is 1-3 pixels, and collimation bands
    of 2-12% in black or white on random edges. No flips. Every random draw comes from the CPU generator ``g``,
    as in ``augment``, so a resumed or moved job sees the same films.
    """
    b, size = u8.shape[0], u8.shape[-1]
    x = _affine(u8[:, None].to(torch.float32) / 255.0, g, degrees=10.0, scale=(0.8, 1.15), shift=0.06)
    dev = x.device

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.to(dev)[:, None, None, None]

    ramp = torch.linspace(-0.5, 0.5, size, device=dev)
    angle = _uniform(g, 0.0, 2 * math.pi, b)
    heel = per_image(torch.cos(angle)) * ramp[None, None, :, None] + per_image(torch.sin(angle)) * ramp[None, None]
    x = x + per_image(_uniform(g, 0.0, 0.15, b)) * heel
    lo, hi = _uniform(g, -0.08, 0.12, b), _uniform(g, 0.8, 1.1, b)
    gamma = torch.exp(_uniform(g, math.log(0.7), math.log(1.5), b))
    x = ((x - per_image(lo)) / per_image(hi - lo)).clamp(0.0, 1.0) ** per_image(gamma)
    sigma = torch.where(torch.rand(b, generator=g) < 0.5, _uniform(g, 0.3, 1.2, b), 0.0) * size / 128
    x = _blur(x, sigma)
    factor = float(_uniform(g, 0.3, 0.75, 1))  # one pitch per batch, applied to a random half of it
    low = max(8, round(size * factor))
    coarse = F.interpolate(F.interpolate(x, size=low, mode="area"), size=size, mode="bilinear", align_corners=False)
    x = torch.where(per_image(torch.rand(b, generator=g) < 0.5), coarse, x)
    grain = int(torch.randint(1, 4, (1,), generator=g))
    noise = torch.randn(b, 1, max(1, size // grain), max(1, size // grain), generator=g)
    noise = F.interpolate(noise, size=size, mode="bilinear", align_corners=False) if grain > 1 else noise
    x = x + noise.to(dev) * per_image(_uniform(g, 0.0, 0.06, b))
    return _collimation(x.clamp(0.0, 1.0), g, p_edge=0.3, max_width=0.12)


def make_batch(
    u8: torch.Tensor, *, mean: float, std: float, g: torch.Generator | None, policy: str = "basic"
) -> torch.Tensor:
    """Model input (B, 1, S, S): augmented by ``policy`` when a generator is given, else exactly ``to_model_input``."""
    if g is None or policy == "none":
        return normalise(u8[:, None], mean=mean, std=std)
    x = scanner_augment(u8, g) if policy == "scanner" else augment(u8, g)
    return (x - mean) / std
