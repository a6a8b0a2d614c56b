"""The one model-input function shared by training and inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pipelines.preprocess import grayscale_norm, load_canonical, to_model_input
from pipelines.training.data import load_split, make_batch


def test_shape_dtype_and_normalisation() -> None:
    pixels = np.full((20, 20), 255, dtype=np.uint8)
    x = to_model_input(pixels, image_size=16, mean=0.5, std=0.25)
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_aspect_ratio_kept_by_padding() -> None:
    pixels = np.full((40, 20), 200, dtype=np.uint8)  # tall image: padded left and right
    x = to_model_input(pixels, image_size=40, mean=0.0, std=1.0)[0]
    assert x[:, :8].max() < 0.05 and x[:, 12:28].min() > 0.7 and x[:, 32:].max() < 0.05


def test_rejects_non_canonical_arrays() -> None:
    with pytest.raises(ValueError, match="uint8 HxW"):
        to_model_input(np.zeros((8, 8, 3), dtype=np.uint8), image_size=8, mean=0.5, std=0.5)
    with pytest.raises(ValueError, match="uint8 HxW"):
        to_model_input(np.zeros((8, 8), dtype=np.float32), image_size=8, mean=0.5, std=0.5)


def test_load_canonical_round_trip(tmp_path: Path) -> None:
    a = np.arange(48 * 30, dtype=np.uint32).reshape(48, 30).astype(np.uint8)
    Image.fromarray(a, mode="L").save(tmp_path / "x.png")
    assert np.array_equal(load_canonical(tmp_path / "x.png"), a)


def test_training_cache_matches_inference_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (37, 51)).astype(np.uint8)
    Image.fromarray(a, mode="L").save(tmp_path / "x.png")
    cached = load_split([(tmp_path / "x.png", 0)], 24)
    train_input = make_batch(cached.images, mean=0.45, std=0.22, g=None)[0]
    assert torch.equal(train_input, to_model_input(a, image_size=24, mean=0.45, std=0.22))


def test_grayscale_norm_averages_rgb() -> None:
    mean, std = grayscale_norm(timm.create_model("test_efficientnet").pretrained_cfg)
    assert mean == pytest.approx((0.485 + 0.456 + 0.406) / 3) and std == pytest.approx((0.229 + 0.224 + 0.225) / 3)
    assert grayscale_norm({"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}) == (0.5, 0.5)
