"""Calibration that never makes things worse, adaptive-bin ECE, Wilson intervals and the threshold table."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training import calibration as C
from pipelines.training.evaluation import operating_point, threshold_table, wilson_interval


def overconfident(rng: np.random.Generator, n: int, *, scale: float = 8.0, noise: float = 1.5) -> tuple:
    """Binary logits with real skill (about 75-85% accuracy) blown up by ``scale``: badly overconfident."""
    labels = rng.integers(0, 2, n)
    margin = (labels * 2 - 1) * 1.0 + rng.normal(0, noise, n)
    return np.stack([-margin, margin], 1) * scale / 2, labels


def test_tiny_validation_set_keeps_the_model_uncalibrated_and_says_why() -> None:
    logits, labels = overconfident(np.random.default_rng(0), 12)
    out = C.calibrate(logits, labels)
    assert out["method"] == "none" and not out["applied"] and out["temperature"] == 1.0
    assert "too small" in out["reason"] and str(C.MIN_CAL_N) in out["size_rule"]
    assert out["ece_after"] == out["ece_before"] and out["nll_after"] == out["nll_before"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [8, 20, 41, 150])
@pytest.mark.parametrize("scale", [0.3, 8.0, 40.0])
def test_calibration_never_raises_validation_ece_and_never_collapses(seed: int, n: int, scale: float) -> None:
    logits, labels = overconfident(np.random.default_rng(seed), n, scale=scale)
    out = C.calibrate(logits, labels)
    assert out["ece_after"] <= out["ece_before"] + 1e-12
    assert out["nll_after"] <= out["nll_before"] + 1e-12
    after = C.softmax(logits, out["temperature"])
    accuracy = (after.argmax(1) == labels).mean()
    if scale > 1:  # an overconfident model with skill is never squashed to ~0.5 (the T = 20 bound's failure)
        assert after.max(1).mean() > 0.5 + 0.5 * (accuracy - 0.5) - 0.1
    if out["applied"]:
        assert out["method"] == "temperature" and out["nll_after"] < out["nll_before"]
        assert 1 / 150 < out["temperature"] < 150
    else:
        assert out["temperature"] == 1.0 and out["reason"]


def test_overconfident_model_with_enough_films_is_calibrated() -> None:
    logits, labels = overconfident(np.random.default_rng(1), 200)
    out = C.calibrate(logits, labels)
    assert out["applied"] and out["temperature"] > 2.0
    assert out["ece_after"] < out["ece_before"] - 0.05


def test_a_fit_on_a_bound_falls_back() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 30)
    separated = np.stack([-(labels * 2 - 1) * 5.0, (labels * 2 - 1) * 5.0], 1)  # NLL -> 0 as T -> 0
    out = C.calibrate(separated, labels)
    assert not out["applied"] and "bound" in out["reason"]
    chance = rng.normal(0, 3, (60, 2))  # no skill: NLL falls as T -> infinity
    out = C.calibrate(chance, rng.permutation(labels))
    assert not out["applied"] and out["temperature"] == 1.0


def test_adaptive_bins_hold_enough_films_and_ece_is_zero_when_calibrated() -> None:
    assert C.adaptive_bins(10) == 2 and C.adaptive_bins(100) == 10 and C.adaptive_bins(10_000) == 15
    rng = np.random.default_rng(3)
    p = rng.uniform(0.5, 1.0, 20_000)
    correct = rng.random(20_000) < p  # confidence == accuracy by construction
    probs = np.stack([p, 1 - p], 1)
    labels = np.where(correct, 0, 1)
    assert C.expected_calibration_error(probs, labels) < 0.02
    bins = C.reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 20_000
    assert [b["confidence"] for b in bins] == sorted(b["confidence"] for b in bins)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (81, 100, 0.7222, 0.8748)],
)
def test_wilson_interval_matches_reference_values(k: int, n: int, lo: float, hi: float) -> None:
    ci = wilson_interval(k, n)
    assert ci is not None and ci[0] == pytest.approx(lo, abs=1e-4) and ci[1] == pytest.approx(hi, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_operating_point_and_threshold_table() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    is_pos = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    op = operating_point(p, is_pos, 0.4, rule="test rule", note=None)
    assert op["sensitivity"] == 1.0 and op["specificity"] == 0.75 and op["n_pos"] == 4 and op["n_neg"] == 4
    assert op["sensitivity_ci95"] == wilson_interval(4, 4) and op["specificity_ci95"] == wilson_interval(3, 4)
    assert op["rule"] == "test rule"
    rows = threshold_table(p, is_pos, [0.5, 0.05, 0.95, 0.4])
    assert [r["threshold"] for r in rows] == [0.05, 0.4, 0.5, 0.95]
    r = rows[2]  # 0.5: positives 0.6 (neg), 0.7, 0.8, 0.9
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (3, 1, 3, 1)
    assert r["ppv"] == 0.75 and r["npv"] == 0.75 and r["sensitivity"] == 0.75 and r["specificity"] == 0.75
    assert rows[3]["ppv"] is None  # nothing called positive at 0.95


def test_a_temperature_that_would_squash_every_probability_is_refused() -> None:
    """Logits with a shared offset (every film leans NORMAL) but a perfect ranking: the issue's T -> 20 case."""
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], 30)
    diff = -1.6 + 0.3 * labels + rng.normal(0, 0.05, 60)  # PNEUMONIA logit minus NORMAL logit
    logits = np.stack([-diff / 2, diff / 2], 1)
    out = C.calibrate(logits, labels)
    assert out["fitted_temperature"] > 3 and not out["applied"] and "squash" in out["reason"], out
    assert C.softmax(logits, out["temperature"]).max(1).min() > 0.75  # the probabilities keep their spread
