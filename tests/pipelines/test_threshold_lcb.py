"""The operating threshold with a lower confidence bound on validation sensitivity (issue 12, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training import calibration as C
from pipelines.training import evaluation as E
from pipelines.training.spec import TrainSpec


def _scores(n_pos: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.beta(5, 2, n_pos), rng.beta(2, 5, n_pos)])
    return p, np.arange(2 * n_pos) < n_pos


def test_clopper_pearson_bound_matches_closed_form_at_all_caught() -> None:
    # k = n: the one-sided bound is (1 - confidence) ** (1 / n).
    for n in (5, 20, 59, 300):
        assert C.sensitivity_lower_bound(n, n, 0.95) == pytest.approx(0.05 ** (1 / n), rel=1e-9)
    assert C.sensitivity_lower_bound(0, 10, 0.95) == 0.0


def test_lcb_threshold_is_lower_than_the_point_rule_at_small_n_and_meets_its_bound() -> None:
    p, is_pos = _scores(300)
    point, note_point = C.threshold_for_sensitivity(p, is_pos, 0.9)
    lcb, note = C.threshold_for_sensitivity(p, is_pos, 0.9, confidence=0.95)
    assert note is None and note_point is None
    assert lcb < point
    caught = int((p[is_pos] >= lcb).sum())
    assert C.sensitivity_lower_bound(caught, 300, 0.95) >= 0.9
    # The highest such threshold: one positive fewer caught and the bound falls short.
    assert C.sensitivity_lower_bound(caught - 1, 300, 0.95) < 0.9


def test_lcb_threshold_approaches_the_point_rule_as_n_grows() -> None:
    gaps = []
    for n in (100, 1000, 20000):
        p, is_pos = _scores(n, seed=n)
        point, _ = C.threshold_for_sensitivity(p, is_pos, 0.9)
        lcb, _ = C.threshold_for_sensitivity(p, is_pos, 0.9, confidence=0.95)
        assert lcb <= point
        gaps.append(point - lcb)
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.01


def test_zero_confidence_is_the_point_rule() -> None:
    p, is_pos = _scores(50)
    assert C.threshold_for_sensitivity(p, is_pos, 0.95, confidence=0.0) == C.threshold_for_sensitivity(p, is_pos, 0.95)


def test_too_few_positives_fall_back_to_the_lowest_positive_score_with_a_note() -> None:
    p, is_pos = _scores(20)  # 20 of 20 caught bounds sensitivity at 0.861 < 0.95
    t, note = C.threshold_for_sensitivity(p, is_pos, 0.95, confidence=0.95)
    assert t == pytest.approx(p[is_pos].min())
    assert note is not None and "20 validation positives" in note and "lowest positive score" in note


def test_spec_field_defaults_and_is_validated() -> None:
    spec = TrainSpec("test_resnet", "full", epochs=1, image_size=32, batch_size=4)
    assert spec.sensitivity_confidence == 0.95
    assert TrainSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="sensitivity_confidence"):
        TrainSpec("test_resnet", "full", epochs=1, image_size=32, batch_size=4, sensitivity_confidence=1.0)


def test_operating_point_move_reports_test_deltas_with_intervals() -> None:
    p_val, pos_val = _scores(100, seed=1)
    p_test, pos_test = _scores(100, seed=2)
    p_test = np.where(pos_test, p_test * 0.8, p_test)  # positives score lower under shift
    move = E.operating_point_move(
        0.5, {"validation": (p_val, pos_val), "test": (p_test, pos_test)}, chosen_on="validation"
    )
    val, test = move["splits"]["validation"], move["splits"]["test"]
    assert move["delta"]["test"]["sensitivity"] == pytest.approx(test["sensitivity"] - val["sensitivity"])
    assert move["delta"]["test"]["sensitivity"] < 0
    assert test["sensitivity_ci95"][0] <= test["sensitivity"] <= test["sensitivity_ci95"][1]
    assert "validation" not in move["delta"]


@pytest.mark.parametrize("confidence", [0.0, 0.95])
def test_the_trained_threshold_follows_the_spec_rule(tmp_path, confidence: float) -> None:  # noqa: ANN001
    """train_classifier applies the spec's rule: the stored threshold is the rule's threshold on the stored scores."""
    from models.artifact import ClassifierArtifact
    from pipelines.train import TrainData, train_classifier
    from tests.pipelines.conftest import CLASSES, write_films

    data = TrainData(
        CLASSES,
        write_films(tmp_path, "train", 30, seed=1),
        write_films(tmp_path, "val", 25, seed=2),
        write_films(tmp_path, "test", 5, seed=3),
    )
    spec = TrainSpec(
        "test_resnet", "full", epochs=2, image_size=48, batch_size=16, lr=3e-3, bootstrap_resamples=0,
        target_sensitivity=0.9, sensitivity_confidence=confidence,
    )  # fmt: skip
    art = ClassifierArtifact.load(train_classifier(spec, data, tmp_path / "job").artifact_path)
    vp = art.val_predictions
    p_pos, is_pos = np.asarray(vp["p_pos"]), np.asarray(vp["is_pos"], dtype=bool)
    expected, _ = C.threshold_for_sensitivity(p_pos, is_pos, 0.9, confidence=confidence)
    other, _ = C.threshold_for_sensitivity(p_pos, is_pos, 0.9, confidence=0.95 - confidence)
    assert expected != other, "25 positives: the point rule and the 95% bound must pick different thresholds"
    assert art.threshold == expected
    assert art.operating_point["sensitivity_confidence"] == confidence
