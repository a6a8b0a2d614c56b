"""Is a trained version fit for use? Flags a model whose validation shows no real skill, with the reasons.

A version is unfit when any of these holds on the validation split:
- its AUROC 95% bootstrap interval reaches down to chance (lower bound <= 0.5), or AUROC cannot be computed;
- every validation film gets (nearly) the same probability;
- with no AUROC interval to judge by (bootstrap off): its validation NLL (best epoch, or after the fitted
  temperature) never falls below chance, the NLL of always answering the validation class frequencies.

When the AUROC interval shows skill, a loss near chance is a note, not a reason: a model can rank films
perfectly while every probability sits near 0.5 (under-trained logits with a bias a temperature cannot
move); its operating threshold still separates the classes, but its probabilities mean little.
"""

from __future__ import annotations

import math

import numpy as np

CHANCE_MARGIN = 0.01  # nats: a loss within this of chance is chance


def chance_nll(labels: np.ndarray, num_classes: int) -> float:
    """NLL of predicting the split's own class frequencies for every film (<= ln C)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def assess(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    auroc: float | None,
    auroc_ci95: list[float] | None,
    val_losses: list[float | None],
) -> dict:
    """The artifact's ``fitness`` dict: {"fit_for_use", "assessed", "reasons", "checks"}."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    reasons: list[str] = []
    n = int(len(labels))
    if n == 0:
        return {"fit_for_use": False, "assessed": True, "reasons": ["no validation films: skill cannot be shown"]}
    num_classes = probs.shape[1]
    chance = chance_nll(labels, num_classes)
    losses = [float(v) for v in val_losses if v is not None and math.isfinite(v)]
    best_loss = min(losses) if losses else None
    spread = float(probs.std(axis=0).max())
    if auroc is None:
        reasons.append("validation AUROC is undefined (a class is missing): skill cannot be shown")
    elif auroc_ci95 is None:
        if auroc <= 0.5:
            reasons.append(f"validation AUROC {auroc:.3f} is no better than chance")
    elif auroc_ci95[0] <= 0.5:
        reasons.append(
            f"validation AUROC {auroc:.3f} (95% CI {auroc_ci95[0]:.3f}-{auroc_ci95[1]:.3f}) "
            "does not exclude chance (0.5)"
        )
    notes: list[str] = []
    if best_loss is not None and best_loss >= chance - CHANCE_MARGIN:
        message = f"validation loss never fell below chance ({best_loss:.3f} vs {chance:.3f})"
        (notes if auroc_ci95 is not None and auroc_ci95[0] > 0.5 else reasons).append(message)
    if spread < 1e-3:
        reasons.append("every validation film gets the same probability")
    return {
        "fit_for_use": not reasons,
        "assessed": True,
        "reasons": reasons,
        "notes": notes,
        "checks": {
            "val_auroc": auroc,
            "val_auroc_ci95": auroc_ci95,
            "best_val_loss": best_loss,
            "chance_loss": chance,
            "probability_spread": spread,
            "n_val": n,
        },
    }
