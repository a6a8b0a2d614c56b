"""Trust figures on synthetic chest X-rays: calibration, conformal coverage, out-of-distribution detection.

    .venv/bin/python bench/trust.py [--per-class 150] [--image-size 64] [--epochs 6] [--backbone test_resnet]
                                    [--label-noise 0.1] [--report-dir DIR] [--no-calibration-split]

The validation films are split in two: half selects the best epoch, half (the calibration split) fits the
temperature, threshold, conformal ``qhat`` and OOD threshold; ``--no-calibration-split`` fits them on the
whole validation split that also selected the epoch (the behaviour before issue 12) for comparison.

``--label-noise`` flips that share of labels in every split: without it the synthetic task is separable
(AUROC 1.0), so no temperature is identifiable and every conformal set is a singleton.

Trains on synthetic films (``pipelines.synthetic``), validates and tests on held-out films of the same
distribution, then predicts a held-out *shifted* set (other seed, flatter contrast, more grain, brighter
exposure: "another site") through the served ``Predictor``. Prints ECE before/after
calibration (adaptive bins), the conformal set's empirical coverage on the test split, the OOD flag rate on
in-distribution test films and the detection rate on each kind of synthetic out-of-distribution input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.infer import Predictor  # noqa: E402
from pipelines.synthetic import render_cxr  # noqa: E402
from pipelines.train import TrainData, TrainSpec, train_classifier  # noqa: E402
from pipelines.training.ood import synthetic_ood_films  # noqa: E402


def write_split(
    root: Path, name: str, n_per_class: int, *, seed: int, size: int, shift: bool = False, label_noise: float = 0.0
) -> list:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(2 * n_per_class):
        y = i % 2
        img = render_cxr(rng, pneumonia=bool(y), size=size)
        if shift:  # another site: flatter contrast, more grain, brighter exposure
            img = np.clip(0.9 * (img - 0.5) + 0.53 + rng.normal(0, 0.02, img.shape), 0, 1)
        path = root / f"{name}_{i:05d}.png"
        Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L").save(path)
        items.append((path, 1 - y if rng.random() < label_noise else y))  # noisy labels: a film is ambiguous
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=150, help="training films per class")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--film-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--backbone", default="test_resnet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--label-noise", type=float, default=0.1, help="share of labels flipped in every split")
    ap.add_argument("--report-dir", type=Path, help="copy the training report (JSON + figures) here")
    ap.add_argument(
        "--no-calibration-split", action="store_true", help="fit calibration on validation (no separate split)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_eval = max(20, args.per_class // 3)
        val = write_split(root / "d", "val", n_eval, seed=2, size=args.film_size, label_noise=args.label_noise)
        half = len(val) // 2 // 2 * 2  # even: both halves keep the alternating class balance
        data = TrainData(
            ["NORMAL", "PNEUMONIA"],
            write_split(root / "d", "train", args.per_class, seed=1, size=args.film_size, label_noise=args.label_noise),
            val if args.no_calibration_split else val[:half],
            write_split(root / "d", "test", n_eval, seed=3, size=args.film_size, label_noise=args.label_noise),
            calibration=[] if args.no_calibration_split else val[half:],
        )
        shifted = write_split(
            root / "d", "shifted", n_eval, seed=4, size=args.film_size, shift=True, label_noise=args.label_noise
        )
        spec = TrainSpec(
            args.backbone,
            "full",
            epochs=args.epochs,
            image_size=args.image_size,
            batch_size=16,
            lr=3e-3,
            device=args.device,
        )
        t0 = time.perf_counter()
        result = train_classifier(spec, data, root / "job")
        seconds = time.perf_counter() - t0
        report = json.loads(Path(result.report_path).read_text())  # type: ignore[arg-type]
        if args.report_dir:
            import shutil

            shutil.copytree(Path(result.report_path).parent, args.report_dir, dirs_exist_ok=True)  # type: ignore[arg-type]
        predictor = Predictor.load(result.artifact_path)
        art = predictor.artifact
        test_films = [np.asarray(Image.open(p)) for p, _ in data.test]
        in_dist = predictor.predict(test_films)
        shifted_preds = predictor.predict([np.asarray(Image.open(p)) for p, _ in shifted])
        names = art.class_names
        shifted_cov = float(
            np.mean([names[y] in (p.prediction_set or []) for p, (_, y) in zip(shifted_preds, shifted, strict=True)])
        )
        shifted_ood = float(np.mean([not p.in_distribution for p in shifted_preds]))
        shifted_auc = float(
            roc_auc_score([y for _, y in shifted], [p.probabilities["PNEUMONIA"] for p in shifted_preds])
        )
        rng = np.random.default_rng(7)
        kinds: dict[str, list[bool]] = {}
        for film in test_films[:40]:
            for kind, image in synthetic_ood_films(rng, film).items():
                kinds.setdefault(kind, []).append(not predictor.predict([image])[0].in_distribution)
    cal, conf, ood = report["calibration"], report["conformal"], report["ood"]
    out = {
        "setup": {
            "backbone": args.backbone,
            "label_noise": args.label_noise,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "train/val/calibration/test films": [len(data.train), len(data.val), len(data.calibration), len(data.test)],
            "calibration_split": cal.get("calibration_split"),
            "train_s": round(seconds, 1),
        },
        "val_auroc": report["val_metrics"]["auroc"],
        "test_auroc": report["test_metrics"]["auroc"],
        "shifted_auroc": shifted_auc,
        "calibration": {
            k: cal.get(k)
            for k in (
                "method",
                "applied",
                "reason",
                "fitted_temperature",
                "temperature",
                "ece_before",
                "ece_after",
                "nll_before",
                "nll_after",
                "bins",
                "n",
            )
        },
        "conformal": {
            k: conf.get(k) for k in ("coverage", "qhat", "n_cal", "empirical_test_coverage", "test_set_sizes")
        }
        | {"shifted_coverage": shifted_cov},
        "ood": {
            "threshold": ood["threshold"],
            "val_fpr": ood["val_fpr"],
            "report_test_flag_rate": ood.get("test_flag_rate"),
            "test_fpr (in-distribution test films flagged)": float(np.mean([not p.in_distribution for p in in_dist])),
            "shifted_flag_rate (shifted films flagged)": shifted_ood,
            "detection_rate": {k: float(np.mean(v)) for k, v in kinds.items()},
        },
        "fitness": report["fitness"],
        "operating_point": {
            k: report["operating_point"].get(k)
            for k in (
                "threshold",
                "split",
                "sensitivity",
                "sensitivity_ci95",
                "specificity",
                "specificity_ci95",
                "note",
            )
        },
        "operating_point_move": report.get("operating_point_move", {}).get("delta"),
        "pretrained": art.pretrained,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
