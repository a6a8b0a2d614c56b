"""Temperature scaling that never makes things worse, adaptive-bin ECE and the operating threshold.

``calibrate`` fits one temperature on the validation logits by NLL (a bounded 1-D search over log T
whose bounds, T in [1/150, 150], sit far outside any sane value) and keeps it only when it helps:

- the validation split is too small: fewer than ``MIN_CAL_N`` (40) films or fewer than ``MIN_PER_CLASS``
  (10) of any class present -> no calibration (one parameter fitted on a handful of films is noise);
- the fit ends on a bound (e.g. perfectly separated validation pushes T to 0, a chance model to infinity);
- validation NLL does not fall, or adaptive-bin ECE rises;
- it would squash every validation probability into (0.4, 0.6) (``COLLAPSE_BAND``): a temperature can only
  flatten a model whose logits carry a shared offset, which hides its ranking behind coin-flip numbers.

In each case the model stays uncalibrated (T = 1) and the reason is recorded. Because the same validation
probabilities decide, the calibrated validation ECE is never above the uncalibrated one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MIN_CAL_N = 40
MIN_PER_CLASS = 10
LOG_T_BOUND = math.log(150.0)
COLLAPSE_BAND = 0.1  # every top-class probability within 0.5 +- 0.1 after scaling = collapsed


def _nll_at(z: np.ndarray, y: np.ndarray, log_t: float) -> float:
    from scipy.special import logsumexp

    scaled = z / math.exp(log_t)
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))


def fit_temperature_raw(logits: np.ndarray, labels: np.ndarray) -> tuple[float, bool]:
    """(T minimising NLL of softmax(logits / T), whether the optimum is on a bound).

    "On a bound" also covers a flat end: when NLL at a bound is as low as at the optimum (e.g. perfectly
    separated validation, where NLL only falls as T -> 0), no interior temperature is identified.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    res = minimize_scalar(
        lambda s: _nll_at(z, y, s), bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded", options={"xatol": 1e-5}
    )
    log_t = float(res.x)
    if not math.isfinite(log_t):
        return 1.0, True
    best = _nll_at(z, y, log_t)
    at_ends = min(_nll_at(z, y, -LOG_T_BOUND), _nll_at(z, y, LOG_T_BOUND))
    on_bound = abs(abs(log_t) - LOG_T_BOUND) < 1e-2 or at_ends <= best + 1e-9
    return math.exp(log_t), on_bound


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 100) -> float:
    """The temperature minimising validation NLL (1.0 for an empty split). ``max_iter`` is kept for callers."""
    if len(labels) == 0:
        return 1.0
    return fit_temperature_raw(logits, labels)[0]


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float | None:
    if len(labels) == 0:
        return None
    z = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(F.cross_entropy(z, torch.as_tensor(labels, dtype=torch.long)).item())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


def adaptive_bins(n: int) -> int:
    """Equal-mass bins for n films: about sqrt(n), between 2 and 15 (at least ~10 films a bin when n allows)."""
    return int(min(15, max(2, min(round(math.sqrt(n)), n // 10 if n >= 20 else 2))))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, *, bins: int | None = None) -> list[dict]:
    """Equal-mass bins of top-class confidence: [{"confidence", "accuracy", "count"}], lowest first."""
    if len(labels) == 0:
        return []
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    out = []
    for chunk in np.array_split(order, bins or adaptive_bins(len(labels))):
        if chunk.size:
            out.append(
                {
                    "confidence": float(conf[chunk].mean()),
                    "accuracy": float(correct[chunk].mean()),
                    "count": int(chunk.size),
                }
            )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int | None = None) -> float | None:
    """ECE of the top-class confidence over equal-mass (adaptive) bins, ``adaptive_bins(n)`` of them by default."""
    if len(labels) == 0:
        return None
    n = len(labels)
    return float(
        sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(probs, labels, bins=bins))
    )


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fit temperature scaling on validation and keep it only when it helps (see the module docstring).

    Returns the artifact's ``calibration`` dict: method, temperature (1.0 unless applied), applied, reason,
    fitted_temperature, nll/ece before and after, bins and n.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    n = int(len(labels))
    before = softmax(logits) if n else np.zeros((0, logits.shape[1] if logits.ndim == 2 else 0))
    bins = adaptive_bins(n)
    out: dict = {
        "method": "none",
        "temperature": 1.0,
        "applied": False,
        "reason": None,
        "fitted_temperature": None,
        "nll_before": nll(logits, labels),
        "ece_before": expected_calibration_error(before, labels, bins=bins),
        "bins": bins,
        "n": n,
        "size_rule": f"fitted only with at least {MIN_CAL_N} validation films and {MIN_PER_CLASS} of each class",
    }
    out["nll_after"], out["ece_after"] = out["nll_before"], out["ece_before"]
    counts = np.bincount(labels.astype(np.int64), minlength=logits.shape[1]) if n else np.zeros(0, dtype=int)
    present = counts[counts > 0]
    if n < MIN_CAL_N or present.size < 2 or present.min() < MIN_PER_CLASS:
        out["reason"] = (
            f"validation too small to fit a temperature ({n} films, per class {counts.tolist()}); {out['size_rule']}"
        )
        return out
    t, on_bound = fit_temperature_raw(logits, labels)
    out["fitted_temperature"] = t
    nll_t = nll(logits, labels, t)
    ece_t = expected_calibration_error(softmax(logits, t), labels, bins=bins)
    out["nll_fitted"], out["ece_fitted"] = nll_t, ece_t
    assert nll_t is not None and ece_t is not None and out["nll_before"] is not None
    if on_bound:
        out["reason"] = f"the temperature fit ran to its bound (T = {t:.3g}): validation cannot identify it"
    elif nll_t >= out["nll_before"] - 1e-6:
        out["reason"] = f"temperature {t:.3g} does not lower validation NLL ({out['nll_before']:.4f} -> {nll_t:.4f})"
    elif _collapsed(softmax(logits, t)) and not _collapsed(before):
        out["reason"] = (
            f"temperature {t:.3g} would squash every validation probability into "
            f"{0.5 - COLLAPSE_BAND:.1f}-{0.5 + COLLAPSE_BAND:.1f} (the model's logits share an offset a temperature "
            "cannot remove)"
        )
    elif ece_t > out["ece_before"]:
        out["reason"] = f"temperature {t:.3g} raises validation ECE ({out['ece_before']:.4f} -> {ece_t:.4f})"
    else:
        out.update(method="temperature", temperature=t, applied=True, nll_after=nll_t, ece_after=ece_t)
    return out


def _collapsed(probs: np.ndarray) -> bool:
    """Binary: every film's top-class probability below 0.5 + ``COLLAPSE_BAND``."""
    return probs.shape[1] == 2 and bool(probs.max(axis=1).max() < 0.5 + COLLAPSE_BAND)


def sensitivity_lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound on a sensitivity of k caught out of n positives.

    Clopper-Pearson rather than Wilson: it is exact (never below its nominal level, whatever n), and near
    sensitivity 1 with a few dozen positives (the case that matters) Wilson's bound runs optimistic.
    """
    from scipy.stats import beta

    if n <= 0 or k <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, k, n - k + 1))


def threshold_rule(target: float, confidence: float, *, split: str = "validation") -> str:
    """The threshold rule in words, as the operating point records it."""
    if confidence <= 0:
        return f"the highest threshold whose {split} sensitivity is at least {target:g} (point estimate)"
    return (
        f"the highest threshold whose one-sided {confidence:.0%} Clopper-Pearson lower bound on {split} "
        f"sensitivity is at least {target:g}"
    )


def threshold_for_sensitivity(
    p_pos: np.ndarray, is_pos: np.ndarray, target: float, *, confidence: float = 0.0, split: str = "validation"
) -> tuple[float, str | None]:
    """The highest threshold whose sensitivity (p >= t among positives) is >= ``target``.

    With ``confidence`` > 0 the sensitivity's one-sided lower bound at that level must reach ``target``
    (``sensitivity_lower_bound``), so a threshold picked on few positives keeps its sensitivity on new films.
    When no threshold can (too few positives: at 0.95 / 0.95 it takes 59), it falls back to the lowest
    positive score, which maximises the bound, and says so. Returns (threshold, note); with no positives in
    validation it falls back to 0.5 and says so.
    """
    pos_scores = np.sort(p_pos[is_pos.astype(bool)])[::-1]
    n = int(pos_scores.size)
    if n == 0:
        return 0.5, f"no positive cases in {split}: threshold 0.5 (target sensitivity not verifiable)"
    if confidence <= 0:
        k = max(1, math.ceil(target * n - 1e-9))
        return float(pos_scores[k - 1]), None
    for k in range(max(1, math.ceil(target * n - 1e-9)), n + 1):
        if sensitivity_lower_bound(k, n, confidence) >= target - 1e-12:
            return float(pos_scores[k - 1]), None
    best = sensitivity_lower_bound(n, n, confidence)
    return float(pos_scores[-1]), (
        f"{n} {split} positives cannot show sensitivity >= {target:g} at {confidence:.0%} confidence (even "
        f"catching all of them bounds it at {best:.3f}): threshold set to the lowest positive score, which "
        "maximises the bound"
    )
