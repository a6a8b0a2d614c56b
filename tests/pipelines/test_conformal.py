"""Split conformal prediction sets: coverage at the nominal level on synthetic data, and the edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training import conformal

NAMES = ["NORMAL", "PNEUMONIA"]


def synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated binary model: p ~ Beta(0.7, 0.7), label ~ Bernoulli(p)."""
    p = rng.beta(0.7, 0.7, n)
    labels = (rng.random(n) < p).astype(int)
    return np.stack([1 - p, p], 1), labels


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_coverage_is_nominal_on_synthetic_data(coverage: float) -> None:
    rng = np.random.default_rng(0)
    rates, sizes = [], []
    for _ in range(200):
        cal_p, cal_y = synthetic(rng, 1000)
        test_p, test_y = synthetic(rng, 1000)
        fitted = conformal.fit(cal_p, cal_y, coverage=coverage)
        rate = conformal.empirical_coverage(test_p, test_y, fitted["qhat"], NAMES)
        assert rate is not None
        rates.append(rate)
        sizes.append(conformal.set_sizes(test_p, fitted["qhat"], NAMES).get("2", 0) / 1000)
    assert abs(np.mean(rates) - coverage) < 0.02, np.mean(rates)
    assert np.mean(np.abs(np.array(rates) - coverage) <= 0.04) >= 0.9  # each draw within a few points
    assert 0.0 < np.mean(sizes) < 1.0  # some films are "uncertain", not all


def test_sets_name_both_classes_only_when_uncertain() -> None:
    fitted = conformal.fit(*synthetic(np.random.default_rng(1), 500))
    qhat = fitted["qhat"]
    assert fitted["method"] == conformal.METHOD and fitted["n_cal"] == 500 and 0 < qhat < 1
    assert conformal.prediction_set([0.01, 0.99], NAMES, qhat) == ["PNEUMONIA"]
    assert conformal.prediction_set([0.99, 0.01], NAMES, qhat) == ["NORMAL"]
    assert conformal.prediction_set([0.5, 0.5], NAMES, qhat) == NAMES
    assert conformal.prediction_set([0.6, 0.4], NAMES, 0.0) == ["NORMAL"]  # never empty: the top class


def test_too_few_calibration_films_give_full_sets() -> None:
    p, y = synthetic(np.random.default_rng(2), 5)
    fitted = conformal.fit(p, y, coverage=0.9)  # ceil(6 * 0.9) = 6 > 5
    assert fitted["qhat"] == 1.0 and "cannot support" in fitted["note"]
    assert conformal.prediction_set([0.001, 0.999], NAMES, fitted["qhat"]) == NAMES
    with pytest.raises(ValueError):
        conformal.fit(p, y, coverage=1.0)
