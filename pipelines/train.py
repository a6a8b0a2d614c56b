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
from pipelines.explain import cam_reference
from pipelines.model_input import INTERPOLATION, LEGACY_MAX_SIDE, PAD
from pipelines.training import calibration as C
from pipelines.training import conformal, fitness, ood
from pipelines.training import data as D
from pipelines.training import evaluation as E
from pipelines.training.evaluation import evaluate_predictions
from pipelines.training.loop import TrainingRun, lr_at, weights_label
from pipelines.training.report import write_report
from pipelines.training.spec import TrainData, TrainingCancelled, TrainResult, TrainSpec, positive_class_index
from pipelines.training.warm_start import InitState, load_init_state

__all__ = [
    "InitState",
    "TrainData",
    "TrainResult",
    "TrainSpec",
    "TrainingCancelled",
    "load_init_state",
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


def _calibration_films(run: TrainingRun) -> tuple[torch.Tensor, np.ndarray, np.ndarray, dict]:
    """(images, logits, labels, record) of the films temperature, threshold, conformal and OOD are fitted on.

    A separate calibration split when the data has one, so the split that picked the best epoch (whose
    scores are optimistic by that choice) fits nothing; else validation, and the record says so.
    """
    if run.data.calibration:
        images = D.load_split(run.data.calibration, run.spec.image_size)
        record = {
            "calibration_split": "calibration",
            "calibration_split_reason": "a calibration split held out of model selection (patient-level, from "
            "validation)",
        }
        return images.images, run.logits_for(images.images).numpy(), images.labels.numpy(), record
    record = {
        "calibration_split": "shared with model selection",
        "calibration_split_reason": "no calibration split (validation too small to divide): temperature, "
        "threshold, conformal and OOD are fitted on the validation split that also picked the best epoch, so test "
        "figures may fall short of them",
    }
    val = run.val_set
    return val.images, run.logits_for(val.images, "val").numpy(), val.labels.numpy(), record


def _calibrate(run: TrainingRun) -> dict:
    """Temperature and threshold on the calibration films (kept only when they help), val metrics, predictions."""
    images, logits, labels, record = _calibration_films(run)
    calibration = {**C.calibrate(logits, labels), **record}
    temperature = float(calibration["temperature"])
    before, after = C.softmax(logits), C.softmax(logits, temperature)
    if run.data.calibration:
        val_logits, val_labels = run.logits_for(run.val_set.images, "val").numpy(), run.val_set.labels.numpy()
    else:
        val_logits, val_labels = logits, labels
    out: dict = {
        "calibration": calibration,
        "images": images,
        "split": "calibration" if run.data.calibration else "validation",
        "temperature": temperature,
        "threshold": None,
        "threshold_note": None,
        "probs_before": before,
        "probs_after": after,
        "labels": labels,
        "val_probs": C.softmax(val_logits, temperature),
        "val_labels": val_labels,
        "operating_point": {},
    }
    pos = run.positive
    if pos is not None:
        target, confidence = run.spec.target_sensitivity, run.spec.sensitivity_confidence
        out["threshold"], out["threshold_note"] = C.threshold_for_sensitivity(
            after[:, pos], labels == pos, target, confidence=confidence, split=out["split"]
        )
        op = E.operating_point(
            after[:, pos],
            labels == pos,
            out["threshold"],
            rule=C.threshold_rule(target, confidence, split=out["split"]),
            note=out["threshold_note"],
        )
        tp = int((after[:, pos][labels == pos] >= out["threshold"]).sum())
        op.update(
            split=out["split"],
            rule_kind="lower_confidence_bound" if confidence > 0 else "point_estimate",
            target_sensitivity=target,
            sensitivity_confidence=confidence,
            sensitivity_lower_bound=C.sensitivity_lower_bound(tp, op["n_pos"], confidence) if confidence else None,
        )
        out["operating_point"] = op
    out["val_metrics"] = evaluate_predictions(
        out["val_probs"],
        val_labels,
        positive=pos,
        threshold=out["threshold"],
        resamples=run.spec.bootstrap_resamples,
        seed=run.spec.seed,
    )
    return out


def _trust(run: TrainingRun, cal: dict) -> dict:
    """Conformal sets, the OOD score and the heatmap reference, fitted on training and calibration films."""
    names = list(run.data.class_names)
    out: dict = {"conformal": {}, "ood": {}, "explanation": {}}
    if len(cal["labels"]):
        out["conformal"] = conformal.fit(cal["probs_after"], cal["labels"])
        out["conformal"]["calibration_split"] = cal["calibration"]["calibration_split"]
    train_features = run.penultimate_features(run.train_set.images, "train").numpy()
    split = None if run.data.calibration else "val"
    cal_features = run.penultimate_features(cal["images"], split).numpy()
    out["ood"] = ood.fit(train_features, run.train_set.labels.numpy(), cal_features)
    if len(cal["labels"]):
        x = D.make_batch(cal["images"], mean=run.mean, std=run.std, g=None)
        out["explanation"] = cam_reference(run.model, x, torch.as_tensor(cal["labels"]), names)
    return out


def _test(run: TrainingRun, cal: dict, trust: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Test metrics once, plus the test figures of the trust layer (conformal coverage, OOD flag rate)."""
    test_set = D.load_split(run.test_items, run.spec.image_size)
    logits = run.logits_for(test_set.images).numpy()
    labels = test_set.labels.numpy()
    probs = C.softmax(logits, cal["temperature"])
    metrics = evaluate_predictions(
        probs,
        labels,
        positive=run.positive,
        threshold=cal["threshold"],
        resamples=run.spec.bootstrap_resamples,
        seed=run.spec.seed,
    )
    names = list(run.data.class_names)
    conf = trust["conformal"]
    if conf:
        conf["empirical_test_coverage"] = conformal.empirical_coverage(probs, labels, conf["qhat"], names)
        conf["test_set_sizes"] = conformal.set_sizes(probs, conf["qhat"], names)
        conf["n_test"] = int(len(labels))
    if trust["ood"]:
        scores = ood.score(trust["ood"], run.penultimate_features(test_set.images).numpy())
        trust["ood"]["test_flag_rate"] = float(np.mean(scores > trust["ood"]["threshold"])) if scores.size else None
        trust["ood"]["n_test"] = int(scores.size)
    return metrics, probs, labels


def _threshold_tables(run: TrainingRun, cal: dict, test_probs: np.ndarray, test_labels: np.ndarray) -> dict:
    pos = run.positive
    if pos is None:
        return {}
    thresholds = [*E.TABLE_THRESHOLDS, *([cal["threshold"]] if cal["threshold"] is not None else [])]
    return {
        name: E.threshold_table(probs[:, pos], labels == pos, thresholds)
        for name, (probs, labels) in _scored_splits(cal, test_probs, test_labels).items()
    }


def _scored_splits(cal: dict, test_probs: np.ndarray, test_labels: np.ndarray) -> dict[str, tuple]:
    """(calibrated probabilities, labels) per split: calibration (when separate), validation, test."""
    out = {"calibration": (cal["probs_after"], cal["labels"])} if cal["split"] == "calibration" else {}
    return out | {"validation": (cal["val_probs"], cal["val_labels"]), "test": (test_probs, test_labels)}


def _operating_point_move(run: TrainingRun, cal: dict, test_probs: np.ndarray, test_labels: np.ndarray) -> dict:
    """The operating point on the split it was chosen on, on validation and on test, with deltas."""
    pos = run.positive
    if pos is None or cal["threshold"] is None:
        return {}
    splits = {k: (p[:, pos], y == pos) for k, (p, y) in _scored_splits(cal, test_probs, test_labels).items()}
    move = E.operating_point_move(cal["threshold"], splits, chosen_on=cal["split"])
    op = cal["operating_point"]
    return move | {"rule": op.get("rule"), "rule_kind": op.get("rule_kind"), "note": op.get("note")}


def _val_predictions(run: TrainingRun, cal: dict) -> dict:
    """Predictions (calibrated) on the threshold's split, for a UI slider to recompute the operating point."""
    pos = run.positive
    out: dict = {
        "split": cal["split"],
        "labels": cal["labels"].tolist(),
        "probs": cal["probs_after"].tolist(),  # unrounded: the threshold is one of these scores
    }
    if pos is not None:
        out["p_pos"] = cal["probs_after"][:, pos].tolist()
        out["is_pos"] = (cal["labels"] == pos).tolist()
    return out


def _fitness(run: TrainingRun, cal: dict) -> dict:
    vm = cal["val_metrics"]
    losses = [h["val"].get("loss") for h in run.history if h.get("val")]
    calibration = cal["calibration"]
    losses.append(calibration.get("nll_fitted") or calibration.get("nll_after"))
    return fitness.assess(
        cal["val_probs"], cal["val_labels"], auroc=vm.get("auroc"), auroc_ci95=vm.get("auroc_ci95"), val_losses=losses
    )


def _public_ood(state: dict) -> dict:
    """The OOD dict without its tensors (for the report)."""
    return {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}


def _write_report(
    run: TrainingRun,
    cal: dict,
    trust: dict,
    test: tuple[dict, np.ndarray, np.ndarray],
    extra: dict,
) -> Path:
    test_metrics, test_probs, test_labels = test
    pos = run.positive
    roc = {}
    if pos is not None:
        roc = {
            "validation": (cal["val_probs"][:, pos], cal["val_labels"] == pos, cal["val_metrics"].get("auroc_ci95")),
            "test": (test_probs[:, pos], test_labels == pos, test_metrics.get("auroc_ci95")),
        }
    cm_labels = (
        [run.data.class_names[1 - pos], run.data.class_names[pos]] if pos is not None else list(run.data.class_names)
    )
    calibration = cal["calibration"]
    report = {
        "class_names": run.data.class_names,
        "positive_class": None if pos is None else run.data.class_names[pos],
        "best_epoch": run.best_epoch,
        "best_val_metric": run.best_metric,
        "epochs_run": run.epoch,
        "stopped_early": run.stopped_early,
        "timings": run.timings,
        "history": run.history,
        "calibration": calibration,
        "reliability": {
            "before": C.reliability_bins(cal["probs_before"], cal["labels"], bins=calibration["bins"]),
            "after": C.reliability_bins(cal["probs_after"], cal["labels"], bins=calibration["bins"]),
        },
        "operating_point": cal["operating_point"],
        "operating_point_move": cal["move"],
        "threshold_table": _threshold_tables(run, cal, test_probs, test_labels),
        "val_metrics": cal["val_metrics"],
        "test_metrics": test_metrics,
        "conformal": trust["conformal"],
        "ood": _public_ood(trust["ood"]),
        "explanation": trust["explanation"],
        "val_predictions": _val_predictions(run, cal),
        "split_sizes": {
            "train": len(run.data.train),
            "val": len(run.data.val),
            "calibration": len(run.data.calibration),
            "test": len(run.data.test),
        },
        **extra,
    }
    return write_report(
        run.out_dir / "report",
        report,
        history=run.history,
        roc=roc,
        operating_point=cal["operating_point"],
        move=cal["move"],
        calibration=(cal["probs_before"], cal["probs_after"], cal["labels"], calibration),
        confusion=(test_metrics["confusion_matrix"], cm_labels),
    )


def check_warm_start(spec: TrainSpec, weights: WeightsSource, init_state: InitState | None) -> None:
    """One source of initial weights, and a warm start only into its own architecture."""
    if init_state is None:
        return
    if weights != "none":
        raise ValueError(
            f"give either weights ({weights_label(weights)}) or a warm start ({init_state.label}), not both"
        )
    if init_state.backbone != spec.backbone:
        raise ValueError(
            f"the warm start {init_state.label} is a {init_state.backbone}; the spec asks for {spec.backbone}"
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
    max_side: int | None = None,
    init_state: InitState | None = None,
) -> TrainResult:
    """Train, calibrate, pick the threshold, fit conformal sets and the OOD score, test once, report, and
    write ``out_dir/model.pt``.

    ``max_side`` is the longest side the dataset's canonical images were bounded to at ingestion (recorded in
    the artifact's ``preprocessing``; default the legacy 512).
    Resumes from ``out_dir/checkpoints/last.pt`` when it matches this spec, data and weights.
    Raises ``TrainingCancelled`` when ``should_stop()`` turns true (the last epoch checkpoint is kept).
    ``init_state`` warm-starts from a registered version (``weights`` must then be "none").
    """
    out_dir = Path(out_dir)
    check_warm_start(spec, weights, init_state)
    label = init_state.label if init_state else weights_label(weights)
    pretrained = label != "none"
    if not pretrained:
        _logger.warning(
            "training %s from random weights (weights: none): expect far lower accuracy than a pretrained start",
            spec.backbone,
        )
    run = TrainingRun(
        spec, data, out_dir, weights=weights, on_progress=on_progress, should_stop=should_stop, init_state=init_state
    )
    run.build_data()
    run.build_model()
    run.build_loss()
    run.build_optimizer()
    run.try_resume()
    run.fit()

    run.emit("calibrating")
    cal = _calibrate(run)
    trust = _trust(run, cal)
    run.emit("testing")
    test = _test(run, cal, trust)
    test_metrics = test[0]
    cal["move"] = _operating_point_move(run, cal, test[1], test[2])
    fit = _fitness(run, cal)
    if not fit["fit_for_use"]:
        _logger.warning("model is not fit for use: %s", "; ".join(fit["reasons"]))
    metadata = {
        "dataset_fingerprint": run.fingerprint,
        "spec": spec.to_dict(),
        "weights": label,
        "pretrained": pretrained,
        "library_versions": _library_versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "device": str(run.device),
        "best_epoch": run.best_epoch,
        "extra_metadata": extra_metadata or {},
        "warm_start": init_state.record() if init_state else None,
    }
    warnings = [] if pretrained else ["trained from random weights (weights: none), not from pretrained weights"]
    extra = {"pretrained": pretrained, "weights": label, "fitness": fit, "warnings": warnings, "metadata": metadata}
    extra["warm_start"] = init_state.description if init_state else None
    report_path = _write_report(run, cal, trust, test, extra)
    pos = run.positive
    preprocessing = {
        "max_side": int(max_side) if max_side else LEGACY_MAX_SIDE,
        "image_size": spec.image_size,
        "mean": float(run.mean),
        "std": float(run.std),
        "interpolation": INTERPOLATION,
        "pad": PAD,
        "chest_check": True,
    }
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
        operating_point={**cal["operating_point"], "test_move": cal["move"]} if cal["operating_point"] else {},
        metrics={"val": cal["val_metrics"], "test": test_metrics},
        metadata=metadata,
        preprocessing=preprocessing,
        calibration=cal["calibration"],
        conformal=trust["conformal"],
        ood=trust["ood"],
        pretrained=pretrained,
        weights=label,
        fitness=fit,
        explanation=trust["explanation"],
        val_predictions=_val_predictions(run, cal),
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
