"""The one model-input function: canonical uint8 grayscale array -> normalised tensor, for training and inference."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def load_canonical(path: Path) -> np.ndarray:
    """Read a canonical PNG (8-bit grayscale, bone bright) into a uint8 HxW array."""
    from PIL import Image

    with Image.open(path) as im:
        gray = im if im.mode == "L" else im.convert("L")
        return np.asarray(gray, dtype=np.uint8).copy()


def resize_square(pixels: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """Pad to a square (keeping the aspect ratio of the anatomy), resize to ``image_size``; uint8 (S, S).

    The result is rounded back to uint8 so the training cache and inference see exactly the same values.
    """
    if isinstance(pixels, torch.Tensor):
        t = pixels
    else:
        arr = np.asarray(pixels)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.dtype != torch.uint8 or t.ndim != 2:
        raise ValueError(f"expected a uint8 HxW array, got {t.dtype} with shape {tuple(t.shape)}")
    h, w = t.shape
    side = max(h, w)
    x = t.to(torch.float32)
    if h != w:
        top, left = (side - h) // 2, (side - w) // 2
        x = F.pad(x, (left, side - w - left, top, side - h - top), value=0.0)
    if side != image_size:
        x = F.interpolate(
            x[None, None], size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )[0, 0]
    return x.round_().clamp_(0, 255).to(torch.uint8)


def normalise(u8: torch.Tensor, *, mean: float, std: float) -> torch.Tensor:
    """uint8 (..., S, S) -> float32 in [0, 1] -> (x - mean) / std."""
    return (u8.to(torch.float32) / 255.0 - mean) / std


def to_model_input(pixels: np.ndarray, *, image_size: int, mean: float, std: float) -> torch.Tensor:
    """uint8 HxW canonical image -> float32 (1, S, S) normalised model input."""
    return normalise(resize_square(pixels, image_size), mean=mean, std=std)[None]


def grayscale_norm(backbone_pretrained_cfg: Any) -> tuple[float, float]:
    """Mean/std for one grayscale channel: the average of the backbone's RGB normalisation values."""
    cfg = backbone_pretrained_cfg
    if not isinstance(cfg, Mapping):
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else vars(cfg)
    mean, std = cfg.get("mean") or (0.5, 0.5, 0.5), cfg.get("std") or (0.5, 0.5, 0.5)
    return float(np.mean(mean)), float(np.mean(std))
