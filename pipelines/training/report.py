"""The training report: report.json with every number, and ROC, curves, calibration and confusion plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

_logger = logging.getLogger(__name__)


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # headless worker: never try to open a display
    import matplotlib.pyplot as plt

    return plt


def plot_roc(path: Path, curves: dict[str, tuple | None], operating_point: dict | None = None) -> None:
    """ROC per split with AUC (and its 95% interval) in the legend; the operating threshold marked on each."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    threshold = (operating_point or {}).get("threshold")
    for split, data in curves.items():
        if data is None:
            continue
        scores, truth = np.asarray(data[0]), np.asarray(data[1]).astype(bool)
        ci = data[2] if len(data) > 2 else None
        if len(np.unique(truth)) != 2:
            continue
        fpr, tpr, _ = roc_curve(truth, scores)
        auc = roc_auc_score(truth, scores)
        label = f"{split} AUC {auc:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
        (line,) = ax.plot(fpr, tpr, label=label)
        if threshold is not None:
            pred = scores >= threshold
            sens, spec = pred[truth].mean(), (~pred[~truth]).mean()
            ax.plot([1 - spec], [sens], marker="o", ms=8, mfc="none", color=line.get_color())
    if threshold is not None:
        ax.plot([], [], "ko", mfc="none", label=f"operating point (threshold {threshold:.3g})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, history: list[dict]) -> None:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(epochs, [h.get("train_loss") for h in history], marker="o", label="train")
    a1.plot(epochs, [h["val"].get("loss") for h in history], marker="o", label="val")
    a1.set(xlabel="epoch", ylabel="loss", title="loss")
    a1.legend()
    a2.plot(epochs, [h["val"].get("auroc") for h in history], marker="o", label="val AUROC")
    a2.set(xlabel="epoch", ylabel="AUROC", title="validation AUROC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(
    path: Path, before: np.ndarray, after: np.ndarray, labels: np.ndarray, calibration: dict | None = None
) -> None:
    """Reliability diagram on equal-mass bins (enough films per point to read), with ECE before/after."""
    from pipelines.training.calibration import expected_calibration_error, reliability_bins

    plt = _plt()
    calibration = calibration or {}
    bins = calibration.get("bins")
    fig, ax = plt.subplots(figsize=(5, 5))
    curves = [("uncalibrated", before)]
    if calibration.get("applied", True):
        curves.append((f"temperature {calibration.get('temperature', 1.0):.3g}", after))
    for name, probs in curves:
        if len(labels) == 0:
            continue
        points = reliability_bins(probs, labels, bins=bins)
        ece = expected_calibration_error(probs, labels, bins=bins)
        ax.plot(
            [p["confidence"] for p in points],
            [p["accuracy"] for p in points],
            marker="o",
            label=f"{name} (ECE {ece:.3f}, {len(points)} bins)",
        )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    title = "reliability (validation)"
    if calibration and not calibration.get("applied", True):
        title += "\nnot calibrated: " + str(calibration.get("reason") or "")[:70]
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", title=title, xlim=(0, 1.02), ylim=(0, 1.02))
    ax.title.set_fontsize(8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(path: Path, matrix: list[list[int]], labels: list[str]) -> None:
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(xlabel="predicted", ylabel="true", title="test confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_operating_point(path: Path, move: dict) -> None:
    """Sensitivity and specificity at the threshold on each split (Wilson 95% bars): how far they move on test."""
    plt = _plt()
    splits = move.get("splits") or {}
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(splits))
    for i, (name, f) in enumerate(splits.items()):
        xs: list[float] = []
        ys: list[float] = []
        errs: list[list[float]] = [[], []]
        for j, metric in enumerate(("sensitivity", "specificity")):
            if f.get(metric) is None:
                continue
            lo, hi = f.get(f"{metric}_ci95") or (f[metric], f[metric])
            xs.append(j + (i - (len(splits) - 1) / 2) * width)
            ys.append(f[metric])
            errs[0].append(max(0.0, f[metric] - lo))  # Wilson ends can sit a rounding error inside the value
            errs[1].append(max(0.0, hi - f[metric]))
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=f"{name} ({f['n_pos']} pos, {f['n_neg']} neg)")
    ax.set_xticks([0, 1], ["sensitivity", "specificity"])
    deltas = "; ".join(
        f"{name}: sens {d['sensitivity']:+.3f}, spec {d['specificity']:+.3f}"
        for name, d in (move.get("delta") or {}).items()
        if d.get("sensitivity") is not None and d.get("specificity") is not None
    )
    title = f"threshold {move['threshold']:.3g} chosen on {move['chosen_on']}"
    ax.set(ylim=(0, 1.05), title=title + (f"\nmove vs {move['chosen_on']}: {deltas}" if deltas else ""))
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _json_default(o: object) -> object:
    if hasattr(o, "tolist"):
        return o.tolist()  # type: ignore[attr-defined]
    return float(o)  # type: ignore[arg-type]


def write_report(
    report_dir: Path,
    report: dict,
    *,
    history: list[dict],
    roc: dict,
    calibration: tuple,
    operating_point: dict | None = None,
    move: dict | None = None,
    confusion: tuple[list[list[int]], list[str]],
) -> Path:
    """Write report.json and the plots (``operating_point.png`` with a ``move``); a failing plot is only logged."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default))
    plots = {
        "roc.png": lambda p: plot_roc(p, roc, operating_point),
        "curves.png": lambda p: plot_curves(p, history),
        "calibration.png": lambda p: plot_calibration(p, *calibration),
        "confusion.png": lambda p: plot_confusion(p, *confusion),
    }
    if move:
        plots["operating_point.png"] = lambda p: plot_operating_point(p, move)
    for name, draw in plots.items():
        try:
            draw(report_dir / name)
        except Exception:  # a cosmetic failure must not lose a trained model
            _logger.exception("could not draw %s", name)
    return path
