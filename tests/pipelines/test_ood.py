"""Out-of-distribution abstention: a Mahalanobis score on penultimate features, threshold from validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.infer import Predictor
from pipelines.preprocess import load_canonical
from pipelines.training import ood
from tests.pipelines.conftest import Trained


def test_fit_and_score_on_gaussian_features() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (400, 8))
    labels = rng.integers(0, 2, 400)
    train[labels == 1] += 3.0
    val = rng.normal(0, 1, (200, 8)) + 3.0 * rng.integers(0, 2, (200, 1))
    state = ood.fit(train, labels, val, target_fpr=0.05)
    assert isinstance(state["means"], torch.Tensor) and state["precision"].shape == (8, 8)
    assert state["val_fpr"] <= 0.05 and state["threshold_from"] == "validation"
    fresh = rng.normal(0, 1, (2000, 8)) + 3.0 * rng.integers(0, 2, (2000, 1))
    assert np.mean(~ood.is_in_distribution(state, ood.score(state, fresh))) < 0.1
    far = rng.normal(8, 1, (100, 8))
    assert np.all(~ood.is_in_distribution(state, ood.score(state, far)))


def test_synthetic_out_of_distribution_films_are_flagged(films_model: Trained) -> None:
    predictor = Predictor.load(films_model.result.artifact_path)
    art = predictor.artifact
    assert art.ood["method"].startswith("mahalanobis") and art.ood["val_fpr"] <= 0.1
    films = [load_canonical(p) for p, _ in films_model.data.test]
    in_dist = predictor.predict(films)
    flagged = np.mean([not p.in_distribution for p in in_dist])
    assert flagged <= 0.15, f"{flagged:.0%} of in-distribution test films flagged (validation FPR {art.ood['val_fpr']})"
    assert all(p.ood_score is not None and p.ood_threshold == art.ood["threshold"] for p in in_dist)
    rng = np.random.default_rng(0)
    detected: dict[str, list[bool]] = {}
    for film in films[:8]:
        for kind, image in ood.synthetic_ood_films(rng, film).items():
            (pred,) = predictor.predict([image])
            detected.setdefault(kind, []).append(pred.in_distribution is False and pred.ood_score > pred.ood_threshold)
    rates = {k: float(np.mean(v)) for k, v in detected.items()}
    assert set(rates) >= {"inverted", "blank", "saturated", "noise", "photo", "hand"}
    assert all(r >= 0.85 for r in rates.values()), rates


@pytest.mark.parametrize("shape", [(96, 96), (120, 90)])
def test_a_non_square_blank_is_flagged(films_model: Trained, shape: tuple[int, int]) -> None:
    predictor = Predictor.load(films_model.result.artifact_path)
    (pred,) = predictor.predict([np.zeros(shape, dtype=np.uint8)])
    assert pred.in_distribution is False
