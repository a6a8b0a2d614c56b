"""bench/quality.py: train on one folder, score another through the serving path, print and save the figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pipelines.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


TINY = ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1", "--batch-size", "16"]
TINY += ["--resamples", "100", "--spec", "bootstrap_resamples=0"]


def test_demo_prints_the_table_and_writes_the_figures(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.json"
    argv = [*TINY, "--demo-per-class", "20", "--demo-size", "48", "--demo-scanner", "film", "--json", str(out)]
    assert quality.main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("AUROC (95% CI)", "sensitivity (95% CI)", "specificity (95% CI)", "ECE", "accuracy", "n "):
        assert row in printed
    assert "external (TEST_DIR)" in printed and "internal test" in printed and "recipe default" in printed
    figures = json.loads(out.read_text())
    ext = figures["external"]
    for key in ("n", "auroc", "auroc_ci95", "sensitivity", "sensitivity_ci95", "specificity", "specificity_ci95"):
        assert key in ext
    assert {"ece", "accuracy", "threshold", "class_counts", "specificity_at_target_sensitivity"} <= set(ext)
    assert "spec. at target sens.*" in printed
    # The demo test set is 1:3 NORMAL:PNEUMONIA from the film scanner, every film scored.
    assert ext["class_counts"] == {"NORMAL": 7, "PNEUMONIA": 20} and ext["n"] == 27
    assert figures["external_rejected"] == 0
    assert figures["demo"]["demo_scanner"] == "film"
    assert figures["spec"]["backbone"] == "test_resnet" and figures["spec"]["image_size"] == 32
    assert figures["splits"]["ingested"] == 27
    assert set(figures["timings"]) == {"train_s", "score_s", "score_ms_per_film"}
    assert figures["internal_test"]["n"] == figures["splits"]["test"]


def test_recipes_baseline_and_default(quality: ModuleType) -> None:
    from pipelines.training import spec as spec_module

    ap = quality.parser()
    baseline = quality.build_spec(ap.parse_args(["--recipe", "baseline"])).to_dict()
    default = quality.build_spec(ap.parse_args(["--recipe", "default"]))
    assert {k: baseline[k] for k in spec_module.BASELINE_RECIPE} == spec_module.BASELINE_RECIPE
    # "default" is today's TrainSpec defaults, not a stored-spec upgrade (which fills in the baseline).
    assert default == spec_module.TrainSpec(**quality.SETUP_DEFAULTS)


def test_spec_layers_setup_recipe_options_and_overrides(quality: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.training import spec as spec_module

    monkeypatch.setattr(spec_module, "BASELINE_RECIPE", {"lr": 0.01, "epochs": 9})
    ap = quality.parser()
    baseline = quality.build_spec(ap.parse_args(["--recipe", "baseline", "--spec", "weight_decay=0.1"]))
    assert (baseline.lr, baseline.epochs, baseline.weight_decay, baseline.backbone) == (0.01, 9, 0.1, "resnet18")
    explicit = quality.build_spec(ap.parse_args(["--recipe", "baseline", "--epochs", "2"]))
    assert explicit.epochs == 2 and explicit.lr == 0.01  # an explicit option beats the recipe
    default = quality.build_spec(ap.parse_args([]))
    assert default.epochs == quality.SETUP_DEFAULTS["epochs"] and default.lr == spec_module.TrainSpec.lr


@pytest.mark.parametrize("pair", ["lr", "=3", "nope=1"])
def test_bad_spec_override_is_named(quality: ModuleType, pair: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert quality.main(["--spec", pair]) == 2
    assert "error:" in capsys.readouterr().err


def test_test_folder_with_an_unknown_class_is_refused_before_training(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_dataset(tmp_path / "train", n_per_class=2, size=32)
    test = write_dataset(tmp_path / "test", n_per_class=2, size=32)
    (test / "NORMAL").rename(test / "EFFUSION")
    assert quality.main([str(train), str(test), *TINY]) == 2
    assert "EFFUSION" in capsys.readouterr().err


def test_folders_are_both_or_neither(quality: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        quality.main([str(tmp_path)])


def test_best_specificity_is_the_oracle_threshold_on_the_scored_films(quality: ModuleType) -> None:
    import numpy as np

    p = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8, 0.9, 0.95])
    is_pos = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=bool)
    # Every positive caught (sensitivity 1.0) needs threshold 0.35: 3 of 4 negatives below it.
    assert quality.best_specificity(p, is_pos, 0.95) == 0.75
    assert quality.best_specificity(p, is_pos, 0.8) == 1.0  # 5 of 6 positives above every negative
    assert quality.best_specificity(p, np.ones(10, dtype=bool), 0.95) is None
