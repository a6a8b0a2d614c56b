"""Temperature scaling, expected calibration error and the operating threshold."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 100) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T) (LBFGS over log T)."""
    if len(labels) == 0:
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    # A degenerate split (e.g. perfectly separated) can push T to 0 or infinity; keep it sane.
    return float(min(max(t, 0.05), 20.0)) if math.isfinite(t) else 1.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float | None:
    if len(labels) == 0:
        return None
    z = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(F.cross_entropy(z, torch.as_tensor(labels, dtype=torch.long)).item())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> float | None:
    """ECE of the top-class confidence, equal-width bins."""
    if len(labels) == 0:
        return None
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def threshold_for_sensitivity(p_pos: np.ndarray, is_pos: np.ndarray, target: float) -> tuple[float, str | None]:
    """The highest threshold whose sensitivity (p >= t among positives) is >= ``target``.

    Returns (threshold, note); with no positives in validation it falls back to 0.5 and says so.
    """
    pos_scores = np.sort(p_pos[is_pos.astype(bool)])[::-1]
    if pos_scores.size == 0:
        return 0.5, "no positive cases in validation: threshold 0.5 (target sensitivity not verifiable)"
    k = max(1, math.ceil(target * pos_scores.size - 1e-9))
    return float(pos_scores[k - 1]), None
