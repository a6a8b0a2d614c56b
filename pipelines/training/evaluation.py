"""Classification metrics (scikit-learn): AUROC with bootstrap CI, and threshold metrics for binary tasks."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score


def auroc(probs: np.ndarray, labels: np.ndarray, positive: int | None) -> tuple[float | None, str | None]:
    """Binary AUROC of the positive class, or macro one-vs-rest AUROC; None with a note when undefined."""
    present = np.unique(labels)
    num_classes = probs.shape[1] if probs.ndim == 2 else 0
    if len(labels) == 0:
        return None, "empty split: AUROC undefined"
    if positive is not None:
        if present.size < 2:
            return None, "only one class present: AUROC undefined"
        return float(roc_auc_score(labels == positive, probs[:, positive])), None
    if present.size < num_classes:
        return None, f"only {present.size} of {num_classes} classes present: macro AUROC undefined"
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro")), None


def rank_auroc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Binary AUROC per row of ``scores``/``truth`` (R, N) by the Mann-Whitney rank statistic (ties averaged).

    Equal to ``roc_auc_score`` but vectorised over bootstrap resamples; NaN where a row lacks a class.
    """
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = truth.sum(axis=1).astype(np.float64)
    n_neg = truth.shape[1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (ranks * truth).sum(axis=1) - n_pos * (n_pos + 1) / 2
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def bootstrap_auroc_ci(
    probs: np.ndarray, labels: np.ndarray, positive: int | None, *, resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """Percentile 95% CI of AUROC over seeded bootstrap resamples (resamples lacking a class are skipped)."""
    if resamples <= 0 or auroc(probs, labels, positive)[0] is None:
        return None
    rng = np.random.default_rng(seed)
    n, values = len(labels), []
    if positive is not None:
        idx = rng.integers(0, n, (resamples, n))
        aucs = rank_auroc(probs[:, positive][idx], (labels == positive)[idx])
        values = aucs[~np.isnan(aucs)].tolist()
    for _ in range(resamples if positive is None else 0):
        idx = rng.integers(0, n, n)
        value, _ = auroc(probs[idx], labels[idx], positive)
        if value is not None:
            values.append(value)
    if len(values) < max(10, resamples // 10):
        return None
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def binary_metrics(p_pos: np.ndarray, is_pos: np.ndarray, threshold: float) -> dict:
    """Accuracy, sensitivity, specificity, PPV, NPV, F1 and the confusion matrix at ``threshold``."""
    pred = p_pos >= threshold
    truth = is_pos.astype(bool)
    tp, fn = int((pred & truth).sum()), int((~pred & truth).sum())
    fp, tn = int((pred & ~truth).sum()), int((~pred & ~truth).sum())
    return {
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, len(truth)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": float(f1_score(truth, pred, zero_division=0)) if len(truth) else None,
        # Rows: truth (negative, positive); columns: prediction.
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def evaluate_predictions(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    positive: int | None,
    threshold: float | None,
    resamples: int = 0,
    seed: int = 0,
) -> dict:
    """Every metric for one split. Binary metrics use ``threshold``; multiclass uses argmax."""
    value, note = auroc(probs, labels, positive)
    out: dict = {"n": int(len(labels)), "auroc": value, "notes": [note] if note else []}
    if resamples:
        out["auroc_ci95"] = bootstrap_auroc_ci(probs, labels, positive, resamples=resamples, seed=seed)
    if positive is not None and threshold is not None:
        out.update(binary_metrics(probs[:, positive], labels == positive, threshold))
        out["confusion_matrix_labels"] = ["negative", "positive"]
    else:
        num_classes = probs.shape[1]
        pred = probs.argmax(axis=1) if len(labels) else np.zeros(0, dtype=int)
        out["accuracy"] = float(accuracy_score(labels, pred)) if len(labels) else None
        out["f1_macro"] = float(f1_score(labels, pred, average="macro", zero_division=0)) if len(labels) else None
        out["confusion_matrix"] = confusion_matrix(labels, pred, labels=list(range(num_classes))).tolist()
    return out


def wilson_interval(k: int, n: int, *, z: float = 1.959963984540054) -> list[float] | None:
    """Wilson score 95% interval of the proportion k / n (None when n == 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def operating_point(p_pos: np.ndarray, is_pos: np.ndarray, threshold: float, *, rule: str, note: str | None) -> dict:
    """Validation sensitivity and specificity at ``threshold`` with Wilson 95% intervals, and how it was chosen."""
    m = binary_metrics(p_pos, is_pos, threshold)
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return {
        "threshold": float(threshold),
        "sensitivity": m["sensitivity"],
        "sensitivity_ci95": wilson_interval(tp, tp + fn),
        "specificity": m["specificity"],
        "specificity_ci95": wilson_interval(tn, tn + fp),
        "ppv": m["ppv"],
        "npv": m["npv"],
        "n_pos": tp + fn,
        "n_neg": tn + fp,
        "split": "validation",
        "rule": rule,
        "note": note,
    }


TABLE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def threshold_table(p_pos: np.ndarray, is_pos: np.ndarray, thresholds: tuple[float, ...] | list[float]) -> list[dict]:
    """Sensitivity, specificity, PPV and NPV (Wilson 95% intervals for the first two) at each threshold."""
    rows = []
    for t in sorted({float(t) for t in thresholds}):
        m = binary_metrics(p_pos, is_pos, t)
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        rows.append(
            {
                "threshold": t,
                "sensitivity": m["sensitivity"],
                "sensitivity_ci95": wilson_interval(tp, tp + fn),
                "specificity": m["specificity"],
                "specificity_ci95": wilson_interval(tn, tn + fp),
                "ppv": m["ppv"],
                "npv": m["npv"],
                "tp": tp,
                "fp": fp,
                "tn": tn,
                "fn": fn,
            }
        )
    return rows


def operating_point_move(threshold: float, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, chosen_on: str) -> dict:
    """How sensitivity and specificity at ``threshold`` move from the split it was chosen on to each other split.

    ``splits`` maps a split name to (positive-class probabilities, is positive). Each split gets its figures
    with Wilson 95% intervals; ``delta`` is (split - ``chosen_on``) for every other split, e.g. test.
    """
    figures: dict[str, dict] = {}
    for name, (p_pos, is_pos) in splits.items():
        m = binary_metrics(np.asarray(p_pos), np.asarray(is_pos), threshold)
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        figures[name] = {
            "sensitivity": m["sensitivity"],
            "sensitivity_ci95": wilson_interval(tp, tp + fn),
            "specificity": m["specificity"],
            "specificity_ci95": wilson_interval(tn, tn + fp),
            "n_pos": tp + fn,
            "n_neg": tn + fp,
        }
    ref = figures.get(chosen_on, {})
    delta: dict[str, dict] = {}
    for name, f in figures.items():
        if name == chosen_on:
            continue
        delta[name] = {
            k: None if f[k] is None or ref.get(k) is None else float(f[k] - ref[k])
            for k in ("sensitivity", "specificity")
        }
    return {"threshold": float(threshold), "chosen_on": chosen_on, "splits": figures, "delta": delta}
