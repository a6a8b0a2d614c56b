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


def plot_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray] | None]) -> None:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for split, data in curves.items():
        if data is None:
            continue
        scores, truth = data
        if len(np.unique(truth)) == 2:
            fpr, tpr, _ = roc_curve(truth, scores)
            ax.plot(fpr, tpr, label=split)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
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


def plot_calibration(path: Path, before: np.ndarray, after: np.ndarray, labels: np.ndarray, bins: int = 10) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    edges = np.linspace(0, 1, bins + 1)
    for name, probs in (("uncalibrated", before), ("temperature-scaled", after)):
        if len(labels) == 0:
            continue
        conf, correct = probs.max(1), probs.argmax(1) == labels
        xs, ys = [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (conf > lo) & (conf <= hi)
            if m.any():
                xs.append(conf[m].mean())
                ys.append(correct[m].mean())
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="confidence", ylabel="accuracy", title="reliability (validation)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
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


def write_report(
    report_dir: Path,
    report: dict,
    *,
    history: list[dict],
    roc: dict,
    calibration: tuple,
    confusion: tuple[list[list[int]], list[str]],
) -> Path:
    """Write report.json and the four plots; a plot that fails is logged, never fatal to the job."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    plots = {
        "roc.png": lambda p: plot_roc(p, roc),
        "curves.png": lambda p: plot_curves(p, history),
        "calibration.png": lambda p: plot_calibration(p, *calibration),
        "confusion.png": lambda p: plot_confusion(p, *confusion),
    }
    for name, draw in plots.items():
        try:
            draw(report_dir / name)
        except Exception:  # a cosmetic failure must not lose a trained model
            _logger.exception("could not draw %s", name)
    return path
