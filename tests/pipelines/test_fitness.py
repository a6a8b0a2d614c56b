"""Fitness for use: a version that learned nothing is flagged, with the reason; one that learned passes."""

from __future__ import annotations

import json

import numpy as np

from models.artifact import ClassifierArtifact
from pipelines.infer import Predictor
from pipelines.preprocess import load_canonical
from pipelines.training import fitness
from tests.pipelines.conftest import Trained


def test_rules_on_plain_numbers() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    flat = np.full((40, 2), 0.5)
    out = fitness.assess(flat, labels, auroc=0.5, auroc_ci95=None, val_losses=[0.693, 0.6932])
    assert not out["fit_for_use"] and len(out["reasons"]) == 3
    assert any("same probability" in r for r in out["reasons"])
    assert any("never fell below chance" in r for r in out["reasons"])
    p = np.clip(labels * 0.8 + 0.1 + rng.normal(0, 0.05, 40), 0, 1)
    good = fitness.assess(np.stack([1 - p, p], 1), labels, auroc=0.99, auroc_ci95=[0.95, 1.0], val_losses=[0.3, 0.2])
    assert good["fit_for_use"] and good["reasons"] == [] and good["checks"]["chance_loss"] == np.log(2)
    ranks_well = fitness.assess(np.stack([1 - p, p], 1), labels, auroc=1.0, auroc_ci95=[1.0, 1.0], val_losses=[0.69])
    assert ranks_well["fit_for_use"] and "below chance" in ranks_well["notes"][0]
    undefined = fitness.assess(np.stack([1 - p, p], 1), np.zeros(40, int), auroc=None, auroc_ci95=None, val_losses=[])
    assert not undefined["fit_for_use"] and "undefined" in undefined["reasons"][0]


def test_a_model_trained_to_chance_is_not_fit_for_use(chance_model: Trained) -> None:
    art = ClassifierArtifact.load(chance_model.result.artifact_path)
    assert art.fitness["assessed"] and not art.fitness["fit_for_use"] and not art.fit_for_use
    assert any("does not exclude chance" in r or "AUROC" in r for r in art.fitness["reasons"]), art.fitness
    report = json.loads(chance_model.result.report_path.read_text())  # type: ignore[union-attr]
    assert report["fitness"] == json.loads(json.dumps(art.fitness))


def test_a_model_that_learned_is_fit_for_use(films_model: Trained) -> None:
    art = ClassifierArtifact.load(films_model.result.artifact_path)
    assert art.fit_for_use and art.fitness["reasons"] == [], art.fitness
    assert art.fitness["checks"]["val_auroc_ci95"][0] > 0.5
    preds = Predictor(art).predict([load_canonical(p) for p, _ in films_model.data.test])
    assert len({round(p.probabilities["PNEUMONIA"], 4) for p in preds}) > 10  # not one probability for all
