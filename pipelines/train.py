"""Train a classifier: dataset + spec -> artifact (weights, calibration, threshold, metrics) + report.

The engine lives in ``pipelines.training``; this module fixes the order of the phases:
data -> model -> (resume) -> fit -> calibrate -> threshold -> test -> report -> artifact.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.artifact import ClassifierArtifact
from models.backbones import model_args
from models.weights import WeightsSource
from pipelines.training import calibration as C
from pipelines.training import data as D
from pipelines.training.evaluation import evaluate_predictions
from pipelines.training.loop import TrainingRun, lr_at, weights_label
from pipelines.training.report import write_report
from pipelines.training.spec import TrainData, TrainingCancelled, TrainResult, TrainSpec, positive_class_index

__all__ = [
    "TrainData",
    "TrainResult",
    "TrainSpec",
    "TrainingCancelled",
    "lr_at",
    "positive_class_index",
    "train_classifier",
]

_logger = logging.getLogger(__name__)


def _library_versions() -> dict:
    import sklearn
    import timm

    return {
        "torch": str(torch.__version__),
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def _calibrate(run: TrainingRun) -> dict:
    """Temperature on validation logits, then the threshold for the target sensitivity, then val metrics."""
    logits = run.logits_for(run.val_set.images).numpy()
    labels = run.val_set.labels.numpy()
    temperature = C.fit_temperature(logits, labels)
    before, after = C.softmax(logits), C.softmax(logits, temperature)
    out: dict = {
        "temperature": temperature,
        "nll_before": C.nll(logits, labels),
        "nll_after": C.nll(logits, labels, temperature),
        "ece_before": C.expected_calibration_error(before, labels),
        "ece_after": C.expected_calibration_error(after, labels),
        "threshold": None,
        "threshold_note": None,
        "probs_before": before,
        "probs_after": after,
        "labels": labels,
    }
    if run.positive is not None:
        out["threshold"], out["threshold_note"] = C.threshold_for_sensitivity(
            after[:, run.positive], labels == run.positive, run.spec.target_sensitivity
        )
    out["val_metrics"] = evaluate_predictions(after, labels, positive=run.positive, threshold=out["threshold"])
    return out


def _test(run: TrainingRun, temperature: float, threshold: float | None) -> tuple[dict, np.ndarray, np.ndarray]:
    test_set = D.load_split(run.test_items, run.spec.image_size)
    logits = run.logits_for(test_set.images).numpy()
    labels = test_set.labels.numpy()
    probs = C.softmax(logits, temperature)
    metrics = evaluate_predictions(
        probs,
        labels,
        positive=run.positive,
        threshold=threshold,
        resamples=run.spec.bootstrap_resamples,
        seed=run.spec.seed,
    )
    return metrics, probs, labels


def _operating_point(cal: dict) -> dict:
    vm = cal["val_metrics"]
    return {
        "threshold": cal["threshold"],
        "sensitivity": vm.get("sensitivity"),
        "specificity": vm.get("specificity"),
        "split": "validation",
        "note": cal["threshold_note"],
    }


def _write_report(
    run: TrainingRun, cal: dict, test_metrics: dict, test_probs: np.ndarray, test_labels: np.ndarray, metadata: dict
) -> Path:
    pos = run.positive
    roc = {}
    if pos is not None:
        roc = {
            "validation": (cal["probs_after"][:, pos], cal["labels"] == pos),
            "test": (test_probs[:, pos], test_labels == pos),
        }
    cm_labels = (
        [run.data.class_names[1 - pos], run.data.class_names[pos]] if pos is not None else list(run.data.class_names)
    )
    report = {
        "class_names": run.data.class_names,
        "positive_class": None if pos is None else run.data.class_names[pos],
        "best_epoch": run.best_epoch,
        "best_val_metric": run.best_metric,
        "epochs_run": run.epoch,
        "stopped_early": run.stopped_early,
        "timings": run.timings,
        "history": run.history,
        "calibration": {k: cal[k] for k in ("temperature", "nll_before", "nll_after", "ece_before", "ece_after")},
        "operating_point": _operating_point(cal),
        "val_metrics": cal["val_metrics"],
        "test_metrics": test_metrics,
        "split_sizes": {"train": len(run.data.train), "val": len(run.data.val), "test": len(run.data.test)},
        "metadata": metadata,
    }
    return write_report(
        run.out_dir / "report",
        report,
        history=run.history,
        roc=roc,
        calibration=(cal["probs_before"], cal["probs_after"], cal["labels"]),
        confusion=(test_metrics["confusion_matrix"], cm_labels),
    )


def train_classifier(
    spec: TrainSpec,
    data: TrainData,
    out_dir: Path,
    *,
    weights: WeightsSource = "none",
    on_progress: Callable[[dict], None] = lambda e: None,
    should_stop: Callable[[], bool] = lambda: False,
    extra_metadata: dict | None = None,
) -> TrainResult:
    """Train, calibrate, pick the threshold, test once, report, and write ``out_dir/model.pt``.

    Resumes from ``out_dir/checkpoints/last.pt`` when it matches this spec, data and weights.
    Raises ``TrainingCancelled`` when ``should_stop()`` turns true (the last epoch checkpoint is kept).
    """
    out_dir = Path(out_dir)
    run = TrainingRun(spec, data, out_dir, weights=weights, on_progress=on_progress, should_stop=should_stop)
    run.build_data()
    run.build_model()
    run.build_loss()
    run.build_optimizer()
    run.try_resume()
    run.fit()

    run.emit("calibrating")
    cal = _calibrate(run)
    run.emit("testing")
    test_metrics, test_probs, test_labels = _test(run, cal["temperature"], cal["threshold"])
    metadata = {
        "dataset_fingerprint": run.fingerprint,
        "spec": spec.to_dict(),
        "weights": weights_label(weights),
        "library_versions": _library_versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "device": str(run.device),
        "best_epoch": run.best_epoch,
        "extra_metadata": extra_metadata or {},
    }
    report_path = _write_report(run, cal, test_metrics, test_probs, test_labels, metadata)
    pos = run.positive
    artifact = ClassifierArtifact(
        state_dict={k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        backbone=spec.backbone,
        model_args=model_args(spec.backbone, run.num_classes),
        class_names=list(data.class_names),
        image_size=spec.image_size,
        mean=run.mean,
        std=run.std,
        temperature=cal["temperature"],
        positive_class=None if pos is None else data.class_names[pos],
        threshold=cal["threshold"],
        operating_point=_operating_point(cal),
        metrics={"val": cal["val_metrics"], "test": test_metrics},
        metadata=metadata,
    )
    artifact_path = out_dir / "model.pt"
    artifact.save(artifact_path)
    run.emit("done", val={k: cal["val_metrics"].get(k) for k in ("accuracy", "auroc")})
    return TrainResult(
        artifact_path=artifact_path,
        best_epoch=run.best_epoch,
        val_metrics=cal["val_metrics"],
        test_metrics=test_metrics,
        report_path=report_path,
    )
