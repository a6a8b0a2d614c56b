"""Test-time augmentation: a few deterministic, anatomy-safe variants of a model-input batch.

Identity, a slight zoom in and out, and a small diagonal shift each way. No flips: a chest film has a
side (the heart is on the left; a mirrored film is a different, rare anatomy), and no rotations beyond
what positioning produces. The logits of the variants are averaged before temperature and threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (scale, shift x, shift y) in the normalised [-1, 1] grid; identity first.
VARIANTS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (1.06, 0.0, 0.0),
    (0.94, 0.0, 0.0),
    (1.0, 0.04, 0.04),
    (1.0, -0.04, -0.04),
)


def tta_batch(x: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) -> (V * N, C, S, S): the variants stacked, variant-major, identity first (exactly ``x``)."""
    out = [x]
    n = x.shape[0]
    for scale, dx, dy in VARIANTS[1:]:
        # affine_grid samples the input at theta @ (x, y, 1): a zoom in of `scale` samples a 1/scale window.
        theta = torch.tensor([[1.0 / scale, 0.0, dx], [0.0, 1.0 / scale, dy]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return torch.cat(out)


def average_logits(logits: torch.Tensor, n: int) -> torch.Tensor:
    """(V * N, K) variant-major logits -> (N, K) mean over the variants."""
    return logits.view(-1, n, logits.shape[-1]).mean(dim=0)
