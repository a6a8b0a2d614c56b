"""Does a recipe hold up on films from another site? Train on one folder, score another through the serving path.

    python bench/quality.py TRAIN_DIR TEST_DIR [--backbone resnet18 --strategy full --image-size 128
        --epochs 6 --weights none --spec key=value ...] [--recipe baseline|default] [--json OUT.json]
    python bench/quality.py --demo [--demo-per-class 200 --demo-scanner portable --demo-difficulty 0.3 ...]

TRAIN_DIR and TEST_DIR hold one folder per class (real or synthetic; PNG, JPEG or DICOM). TRAIN_DIR is zipped and
ingested like an upload (``pipelines.ingest.ingest_archive``), split patient-level by
``DatasetVersion.train_data`` and trained by ``train_classifier``. Every film of TEST_DIR then goes through
``pipelines.model_input.prepare`` and ``pipelines.infer.Predictor``, the code that answers ``POST /v1/predictions``,
at the model's own threshold. The table shows AUROC (bootstrap 95% CI), sensitivity and specificity (Wilson
95% CI), ECE, accuracy and n on that external set, beside the internal test split of TRAIN_DIR.

``--recipe baseline`` starts from ``pipelines.training.spec.BASELINE_RECIPE`` (the old recipe's spec overrides),
``--recipe default`` from today's ``TrainSpec`` defaults; ``--spec key=value`` overrides either. ``--demo`` writes
a training set in the default synthetic look (1:3 NORMAL:PNEUMONIA, some subtle and confounding films) and a
test set of other patients from a shifted scanner with more of them (``pipelines.synthetic``), so old and new
recipes compare in one command each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.dataset import DatasetVersion  # noqa: E402
from pipelines.imaging import ImageRejected  # noqa: E402
from pipelines.infer import Predictor  # noqa: E402
from pipelines.ingest import IngestConfig, ingest_archive, normalise_label  # noqa: E402
from pipelines.model_input import prepare, preprocessing_of  # noqa: E402
from pipelines.synthetic import SCANNER_NAMES, parse_ratio, write_dataset  # noqa: E402
from pipelines.train import TrainSpec, train_classifier  # noqa: E402
from pipelines.training import spec as spec_module  # noqa: E402
from pipelines.training.calibration import expected_calibration_error  # noqa: E402
from pipelines.training.evaluation import evaluate_predictions, wilson_interval  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}
SCORE_BATCH = 64


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.003", "augment=false"]`` -> {"lr": 0.003, "augment": False}: JSON values, else plain strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--spec takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


# The experiment's setup; a recipe may override these, an explicit option overrides the recipe.
SETUP_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "strategy": "full",
    "epochs": 6,
    "image_size": 128,
    "batch_size": 32,
    "seed": 0,
    "device": "auto",
}


def build_spec(args: argparse.Namespace) -> TrainSpec:
    """Setup defaults, then the recipe (baseline overrides or today's defaults), explicit options, ``--spec``."""
    recipe: dict[str, Any] = {}
    if args.recipe == "baseline":
        baseline = getattr(spec_module, "BASELINE_RECIPE", None)
        if baseline is None:
            raise ValueError("pipelines.training.spec.BASELINE_RECIPE is not defined in this tree")
        recipe = dict(baseline)
    explicit = {k: getattr(args, k) for k in SETUP_DEFAULTS if getattr(args, k) is not None}
    fields = {**SETUP_DEFAULTS, **recipe, **explicit, **parse_overrides(args.spec)}
    unknown = set(fields) - {f.name for f in dataclasses.fields(TrainSpec)}
    if unknown:
        raise ValueError(f"unknown TrainSpec fields: {', '.join(sorted(unknown))}")
    # Not ``from_dict``: it reads a missing recipe field as a spec stored before the recipe (the baseline).
    return TrainSpec(**fields)


def films(folder: Path) -> list[tuple[Path, str]]:
    """(path, normalised class) for every file under ``folder/<class>/``, sorted; hidden files skipped."""
    out = []
    for cls_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(cls_dir.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                out.append((path, normalise_label(cls_dir.name)))
    if not out:
        raise ValueError(f"{folder} holds no class folders with images")
    return out


def zip_folder(folder: Path, out_zip: Path) -> Path:
    """Class folders as an upload would arrive: ``<class>/<file>``, stored (images are compressed already)."""
    with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_STORED) as zf:
        for path, _ in films(folder):
            zf.write(path, path.relative_to(folder).as_posix())
    return out_zip


def train(args: argparse.Namespace, spec: TrainSpec, work: Path) -> tuple[Path, dict, float, dict]:
    """Ingest TRAIN_DIR, split, train. Returns (artifact path, internal test metrics, seconds, split sizes)."""
    report = ingest_archive(zip_folder(args.train_dir, work / "train.zip"), work / "dataset", IngestConfig("bench"))
    version = DatasetVersion(work / "dataset")
    data = version.train_data(seed=spec.seed)
    t0 = time.perf_counter()
    result = train_classifier(spec, data, work / "job", weights=args.weights, max_side=version.max_side())
    seconds = time.perf_counter() - t0
    run_report = json.loads(Path(result.report_path).read_text()) if result.report_path else {}
    sizes = {
        "ingested": report.accepted,
        "rejected": report.rejected_total,
        "train": len(data.train),
        "val": len(data.val),
        "calibration": len(data.calibration),
        "test": len(data.test),
        "best_epoch": result.best_epoch,
        "epochs_run": run_report.get("epochs_run"),
        "stopped_early": run_report.get("stopped_early"),
    }
    return result.artifact_path, result.test_metrics, seconds, sizes


def score(
    artifact_path: Path, test_dir: Path, *, tta: bool = False
) -> tuple[np.ndarray, np.ndarray, Predictor, int, float]:
    """Calibrated probabilities and label indices of every scorable TEST_DIR film, as served; (.., rejected, s).

    ``tta`` scores as ``POST /v1/predictions?tta=true`` does (logits averaged over ``pipelines.tta.VARIANTS``)."""
    predictor = Predictor.load(artifact_path)
    art = predictor.artifact
    preprocessing = preprocessing_of(art)
    items = films(test_dir)
    t0 = time.perf_counter()
    probs, labels, rejected = [], [], 0
    for start in range(0, len(items), SCORE_BATCH):
        pixels = []
        for path, label in items[start : start + SCORE_BATCH]:
            try:
                pixels.append(prepare(path.read_bytes(), preprocessing).pixels)
            except ImageRejected:
                rejected += 1
                continue
            labels.append(art.class_names.index(label))
        for p in predictor.predict(pixels, tta=tta):
            probs.append([p.probabilities[c] for c in art.class_names])
    seconds = time.perf_counter() - t0
    return np.asarray(probs, dtype=np.float64), np.asarray(labels), predictor, rejected, seconds


def external_metrics(probs: np.ndarray, labels: np.ndarray, predictor: Predictor, *, resamples: int) -> dict:
    """AUROC (bootstrap CI), sensitivity/specificity (Wilson CI) at the model's threshold, ECE, accuracy, n."""
    art = predictor.artifact
    positive = art.class_names.index(art.positive_class) if art.positive_class else None
    m = evaluate_predictions(probs, labels, positive=positive, threshold=art.threshold, resamples=resamples, seed=0)
    out = {k: m.get(k) for k in ("n", "auroc", "auroc_ci95", "accuracy", "sensitivity", "specificity", "threshold")}
    if "confusion_matrix" in m and positive is not None and art.threshold is not None:
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        out["sensitivity_ci95"] = wilson_interval(tp, tp + fn)
        out["specificity_ci95"] = wilson_interval(tn, tn + fp)
        out["confusion_matrix"] = m["confusion_matrix"]
    out["ece"] = expected_calibration_error(probs, labels)
    if positive is not None and probs.shape[1] == 2:
        target = float((art.operating_point or {}).get("target_sensitivity") or 0.95)
        out["specificity_at_target_sensitivity"] = best_specificity(probs[:, positive], labels == positive, target)
        out["target_sensitivity"] = target
    out["class_counts"] = {c: int((labels == i).sum()) for i, c in enumerate(art.class_names)}
    return out


def best_specificity(p_pos: np.ndarray, is_pos: np.ndarray, target: float) -> float | None:
    """The highest specificity of any threshold whose sensitivity on these films reaches ``target``.

    What the model could do here with its threshold re-picked on these very films (an oracle for this set,
    the figure the real-data target is stated in), beside what its own threshold does.
    """
    from sklearn.metrics import roc_curve

    if is_pos.all() or not is_pos.any():
        return None
    fpr, tpr, _ = roc_curve(is_pos.astype(int), p_pos)
    ok = tpr >= target - 1e-12
    return float(1.0 - fpr[ok].min()) if ok.any() else None


def _fmt(value: Any, ci: list[float] | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def table(figures: dict) -> str:
    """The printed table: the external set beside the internal test split."""
    ext, internal = figures["external"], figures["internal_test"]
    rows: list[tuple[str, ...]] = [
        (
            "AUROC (95% CI)",
            _fmt(ext["auroc"], ext.get("auroc_ci95")),
            _fmt(internal.get("auroc"), internal.get("auroc_ci95")),
        ),
        (
            "sensitivity (95% CI)",
            _fmt(ext["sensitivity"], ext.get("sensitivity_ci95")),
            _fmt(internal.get("sensitivity")),
        ),
        (
            "specificity (95% CI)",
            _fmt(ext["specificity"], ext.get("specificity_ci95")),
            _fmt(internal.get("specificity")),
        ),
        ("threshold", _fmt(ext["threshold"]), _fmt(internal.get("threshold"))),
        ("spec. at target sens.*", _fmt(ext.get("specificity_at_target_sensitivity")), "-"),
        ("accuracy", _fmt(ext["accuracy"]), _fmt(internal.get("accuracy"))),
        ("ECE", _fmt(ext["ece"]), "-"),
        ("n", _fmt(ext["n"]), _fmt(internal.get("n"))),
    ]
    tta = figures.get("external_tta")
    if tta:
        rows = [
            (*r, v)
            for r, v in zip(
                rows,
                [
                    _fmt(tta["auroc"], tta.get("auroc_ci95")),
                    _fmt(tta["sensitivity"], tta.get("sensitivity_ci95")),
                    _fmt(tta["specificity"], tta.get("specificity_ci95")),
                    _fmt(tta["threshold"]),
                    _fmt(tta.get("specificity_at_target_sensitivity")),
                    _fmt(tta["accuracy"]),
                    _fmt(tta["ece"]),
                    _fmt(tta["n"]),
                ],
                strict=True,
            )
        ]
    width = max(len(r[1]) for r in rows) + 2
    iwidth = max(len(r[2]) for r in rows) + 2
    spec, sizes = figures["spec"], figures["splits"]
    lines = [
        f"recipe {figures['recipe']}: {spec['backbone']} {spec['strategy']} {spec['image_size']} px, "
        f"{spec['epochs']} epochs, weights {figures['weights']}; train/val/calibration/test "
        f"{sizes['train']}/{sizes['val']}/{sizes['calibration']}/{sizes['test']} films",
        f"{'':<22}{'external (TEST_DIR)':<{width}}{'internal test':<{iwidth}}" + ("external, TTA" if tta else ""),
        *(f"{r[0]:<22}{r[1]:<{width}}{r[2]:<{iwidth}}" + (r[3] if tta else "") for r in rows),
    ]
    t = figures["timings"]
    lines.append(
        f"* the best specificity at sensitivity >= {ext.get('target_sensitivity', 0.95):g} with the threshold "
        "re-picked on TEST_DIR itself (what re-tuning at that site could reach)"
    )
    lines.append(
        f"train {t['train_s']:.1f} s ({sizes['epochs_run']} epochs run, best {sizes['best_epoch']}), "
        f"score {t['score_s']:.1f} s ({t['score_ms_per_film']:.1f} ms/film)"
    )
    return "\n".join(lines)


def write_demo(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """A default-look training set and a shifted, harder test set from other patients (another seed)."""
    ratio = parse_ratio(args.demo_ratio)
    train_dir = write_dataset(
        root / "demo_train",
        n_per_class=args.demo_per_class,
        size=args.demo_size,
        ratio=ratio,
        seed=11,
        difficulty=args.demo_train_difficulty,
    )
    test_dir = write_dataset(
        root / "demo_test",
        n_per_class=args.demo_test_per_class or args.demo_per_class,
        size=args.demo_size,
        ratio=ratio,
        seed=12,
        scanner=args.demo_scanner,
        difficulty=args.demo_difficulty,
    )
    return train_dir, test_dir


def run(args: argparse.Namespace) -> dict:
    spec = build_spec(args)
    with tempfile.TemporaryDirectory(prefix="hilum-quality-") as tmp:
        work = Path(tmp)
        if args.demo:
            args.train_dir, args.test_dir = write_demo(work, args)
        unknown = sorted({c for _, c in films(args.test_dir)} - {c for _, c in films(args.train_dir)})
        if unknown:
            raise ValueError(f"{args.test_dir} has classes that {args.train_dir} lacks: {', '.join(unknown)}")
        artifact, internal, train_s, sizes = train(args, spec, work)
        probs, labels, predictor, rejected, score_s = score(artifact, args.test_dir)
        tta = None
        if args.tta:
            tta_probs, tta_labels, _, _, _ = score(artifact, args.test_dir, tta=True)
            tta = external_metrics(tta_probs, tta_labels, predictor, resamples=args.resamples)
        figures = {
            "recipe": args.recipe,
            "spec": spec.to_dict(),
            "weights": args.weights,
            "train_dir": "demo" if args.demo else str(args.train_dir),
            "test_dir": "demo" if args.demo else str(args.test_dir),
            "demo": {k: getattr(args, k) for k in vars(args) if k.startswith("demo_")} if args.demo else None,
            "splits": sizes,
            "external": external_metrics(probs, labels, predictor, resamples=args.resamples),
            "external_rejected": rejected,
            "external_tta": tta,
            "internal_test": {
                k: internal.get(k)
                for k in ("n", "auroc", "auroc_ci95", "accuracy", "sensitivity", "specificity", "threshold")
            },
            "timings": {
                "train_s": round(train_s, 2),
                "score_s": round(score_s, 2),
                "score_ms_per_film": round(1000 * score_s / max(1, len(labels)), 2),
            },
        }
    return figures


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_dir", nargs="?", type=Path, help="class folders to train on")
    ap.add_argument("test_dir", nargs="?", type=Path, help="class folders to score (another site)")
    ap.add_argument("--demo", action="store_true", help="generate both sets (the default without folders)")
    d = SETUP_DEFAULTS
    ap.add_argument("--backbone", help=f"default {d['backbone']}")
    ap.add_argument("--strategy", choices=["frozen", "full", "gradual"], help=f"default {d['strategy']}")
    ap.add_argument("--image-size", type=int, help=f"default {d['image_size']}")
    ap.add_argument("--epochs", type=int, help=f"default {d['epochs']}")
    ap.add_argument("--batch-size", type=int, help=f"default {d['batch_size']}")
    ap.add_argument("--seed", type=int, help=f"split and training seed, default {d['seed']}")
    ap.add_argument("--device", help=f"default {d['device']}")
    ap.add_argument("--weights", default="none", choices=["none", "imagenet"])
    ap.add_argument("--recipe", default="default", choices=["baseline", "default"])
    ap.add_argument("--spec", action="append", default=[], metavar="KEY=VALUE", help="TrainSpec field override")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the external AUROC CI")
    ap.add_argument("--tta", action="store_true", help="also score TEST_DIR with test-time augmentation")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--demo-per-class", type=int, default=200, help="films of the larger class per demo set")
    ap.add_argument("--demo-test-per-class", type=int, default=None, help="default: --demo-per-class")
    ap.add_argument("--demo-size", type=int, default=128, help="demo film side in pixels")
    ap.add_argument("--demo-ratio", default="1:3", help="NORMAL:PNEUMONIA in both demo sets")
    ap.add_argument("--demo-scanner", default="portable", choices=SCANNER_NAMES, help="the demo test set's scanner")
    ap.add_argument("--demo-difficulty", type=float, default=0.3, help="the demo test set's difficulty (0..1)")
    ap.add_argument("--demo-train-difficulty", type=float, default=0.3, help="the demo training set's (0..1)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if (args.train_dir is None) != (args.test_dir is None):
        ap.error("give both TRAIN_DIR and TEST_DIR, or neither (--demo)")
    args.demo = args.demo or args.train_dir is None
    if args.demo and args.train_dir is not None:
        ap.error("--demo generates its own folders: drop TRAIN_DIR and TEST_DIR")
    for folder in (args.train_dir, args.test_dir):
        if folder is not None and not folder.is_dir():
            ap.error(f"{folder} is not a folder")
    logging.basicConfig(level=logging.WARNING)
    try:
        figures = run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
