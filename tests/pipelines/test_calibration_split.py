"""A calibration split held out of model selection fits temperature, threshold, conformal and OOD (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.infer import Predictor
from pipelines.train import TrainData, TrainSpec, train_classifier
from pipelines.training import conformal
from tests.pipelines.conftest import CLASSES, write_films


def test_qhat_from_a_split_apart_from_model_selection_covers_held_out_draws() -> None:
    """Why the split: picking the best of several epochs on validation makes validation scores optimistic,
    so a ``qhat`` fitted there under-covers new films; fitted on a split that picked nothing, it does not."""
    rng = np.random.default_rng(0)
    n, epochs, draws = 100, 8, 300

    def scores(noise: np.ndarray) -> np.ndarray:  # p(true class) of each film under one epoch's model
        return 1.0 / (1.0 + np.exp(-(1.0 + noise)))

    shared, separate = [], []
    for _ in range(draws):
        # Every epoch has the same true skill; its validation scores differ by chance alone.
        val = [scores(rng.normal(0, 1.5, n)) for _ in range(epochs)]
        best = int(np.argmax([v.mean() for v in val]))
        probs_of = lambda p: np.stack([1 - p, p], axis=1)  # noqa: E731 (the true class is 1 here)
        q_shared = conformal.fit(probs_of(val[best]), np.ones(n, dtype=int))["qhat"]
        q_separate = conformal.fit(probs_of(scores(rng.normal(0, 1.5, n))), np.ones(n, dtype=int))["qhat"]
        test = probs_of(scores(rng.normal(0, 1.5, 400)))
        shared.append(conformal.empirical_coverage(test, np.ones(400, dtype=int), q_shared, ["a", "b"]))
        separate.append(conformal.empirical_coverage(test, np.ones(400, dtype=int), q_separate, ["a", "b"]))
    assert np.mean(separate) == pytest.approx(0.9, abs=0.01)
    assert np.mean(shared) < np.mean(separate) - 0.01


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainData, dict, Path]:
    root = tmp_path_factory.mktemp("calsplit")
    data = TrainData(
        CLASSES,
        write_films(root, "train", 40, seed=1),
        write_films(root, "val", 15, seed=2),
        write_films(root, "test", 15, seed=3),
        calibration=write_films(root, "cal", 25, seed=4, shuffle_labels=False),
    )
    spec = TrainSpec("test_resnet", "full", epochs=3, image_size=48, batch_size=16, lr=3e-3, bootstrap_resamples=50)
    result = train_classifier(spec, data, root / "job")
    assert result.report_path is not None
    return data, json.loads(Path(result.report_path).read_text()), result.artifact_path


def test_calibration_split_fits_the_trust_parameters(trained: tuple[TrainData, dict, Path]) -> None:
    data, report, artifact_path = trained
    assert report["split_sizes"] == {"train": 80, "val": 30, "calibration": 50, "test": 30}
    assert report["calibration"]["calibration_split"] == "calibration"
    assert report["calibration"]["n"] == 50
    assert report["conformal"]["n_cal"] == 50 and report["conformal"]["calibration_split"] == "calibration"
    op = report["operating_point"]
    assert op["split"] == "calibration" and op["n_pos"] + op["n_neg"] == 50
    assert report["val_metrics"]["n"] == 30  # validation still scores the model it selected
    assert set(report["operating_point_move"]["splits"]) == {"calibration", "validation", "test"}
    assert report["operating_point_move"]["chosen_on"] == "calibration"
    assert set(report["threshold_table"]) == {"calibration", "validation", "test"}
    assert (Path(artifact_path).parent / "report" / "operating_point.png").exists()
    # qhat is the conformal quantile of the calibration films' served probabilities, not validation's.
    predictor = Predictor.load(artifact_path)
    labels = np.array([y for _, y in data.calibration])
    probs = predictor.probabilities([np.asarray(Image.open(p)) for p, _ in data.calibration])
    assert report["conformal"]["qhat"] == pytest.approx(conformal.fit(probs, labels)["qhat"], abs=1e-3)


def test_without_a_calibration_split_the_report_says_it_is_shared(tmp_path: Path) -> None:
    data = TrainData(
        CLASSES,
        write_films(tmp_path, "train", 10, seed=1),
        write_films(tmp_path, "val", 5, seed=2),
        write_films(tmp_path, "test", 5, seed=3),
    )
    spec = TrainSpec("test_resnet", "full", epochs=1, image_size=32, batch_size=8, bootstrap_resamples=0)
    result = train_classifier(spec, data, tmp_path / "job")
    assert result.report_path is not None
    report = json.loads(Path(result.report_path).read_text())
    assert report["calibration"]["calibration_split"] == "shared with model selection"
    assert "picked the best epoch" in report["calibration"]["calibration_split_reason"]
    assert report["split_sizes"]["calibration"] == 0
    assert report["operating_point"]["split"] == "validation"


def test_card_shows_the_threshold_rule_and_how_the_operating_point_moves_on_test(
    trained: tuple[TrainData, dict, Path], tmp_path: Path
) -> None:
    from hilum.db import session_scope
    from hilum.migrate import upgrade_to_head
    from hilum.registry import register_version
    from hilum.storage import Storage
    from hilum.tables import Dataset, Job
    from service.domain import cards

    _, report, artifact_path = trained
    url = f"sqlite:///{tmp_path / 'hilum.db'}"
    upgrade_to_head(url)
    storage = Storage(tmp_path / "data")
    storage.ensure()
    with session_scope(url) as session:
        session.add(Dataset(id="d1", name="d", status="ready"))
        job = Job(id="j1", dataset_id="d1", status="succeeded", spec={}, model_name="m")
        session.add(job)
        session.flush()
        row = register_version(
            session,
            storage,
            job,
            artifact=artifact_path,
            backbone="test_resnet",
            class_names=[],
            threshold=None,
            metrics={},
        )
        card = cards.model_card(session, storage, row)
    rule = card.threshold_rule
    assert rule is not None and rule["kind"] == "lower_confidence_bound" and "Clopper-Pearson" in rule["why"]
    assert rule["chosen_on"] == "calibration" and rule["sensitivity_confidence"] == 0.95
    move = card.operating_point_move
    assert move is not None and move == report["operating_point_move"]
    test = move["splits"]["test"]
    assert move["delta"]["test"]["specificity"] == pytest.approx(
        test["specificity"] - move["splits"]["calibration"]["specificity"]
    )
    assert len(test["sensitivity_ci95"]) == 2
    assert any("calibration split held out of model selection" in x for x in card.known_limits) or not (
        card.calibration.get("applied")
    )
