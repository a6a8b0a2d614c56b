"""Predictor: calibrated probabilities, the artifact's threshold, one forward pass per batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import ClassifierArtifact
from pipelines.infer import Predictor
from pipelines.preprocess import load_canonical, to_model_input
from pipelines.train import TrainSpec, train_classifier
from tests.pipelines.conftest import Trained
from tests.pipelines.test_train import make_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, int]]]:
    root = tmp_path_factory.mktemp("infer")
    data = make_dataset(root / "data")
    spec = TrainSpec("test_resnet", "full", epochs=3, image_size=32, batch_size=8, lr=3e-3, bootstrap_resamples=0)
    return train_classifier(spec, data, root / "job").artifact_path, data.test


def test_predictions_are_calibrated_and_thresholded(trained: tuple[Path, list]) -> None:
    artifact_path, test = trained
    predictor = Predictor.load(artifact_path)
    art = predictor.artifact
    images = [load_canonical(p) for p, _ in test]
    preds = predictor.predict(images)
    assert len(preds) == len(images)
    x = torch.stack([to_model_input(im, image_size=art.image_size, mean=art.mean, std=art.std) for im in images])
    with torch.inference_mode():
        expected = torch.softmax(art.build_model()(x) / art.temperature, dim=1)[:, 1].numpy()
    for pred, p_pos in zip(preds, expected, strict=True):
        assert pred.probabilities["PNEUMONIA"] == pytest.approx(float(p_pos), abs=1e-5)
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert pred.label == ("PNEUMONIA" if p_pos >= art.threshold else "NORMAL")
        assert pred.positive_class == "PNEUMONIA" and pred.threshold == art.threshold
    accuracy = np.mean([(p.label == "PNEUMONIA") == (y == 1) for p, (_, y) in zip(preds, test, strict=True)])
    assert accuracy >= 0.75


def test_threshold_moves_the_label(trained: tuple[Path, list], tmp_path: Path) -> None:
    artifact_path, test = trained
    art = ClassifierArtifact.load(artifact_path)
    images = [load_canonical(p) for p, _ in test]
    for threshold, label in ((0.0, "PNEUMONIA"), (1.01, "NORMAL")):
        dataclasses.replace(art, threshold=threshold).save(tmp_path / "a.pt")
        assert {p.label for p in Predictor.load(tmp_path / "a.pt").predict(images)} == {label}


def test_one_forward_pass_per_batch(trained: tuple[Path, list]) -> None:
    predictor = Predictor.load(trained[0])
    calls: list[int] = []
    predictor.model.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    images = [load_canonical(p) for p, _ in trained[1]]
    predictor.predict(images)
    assert calls == [len(images)]
    assert predictor.predict([]) == []


def test_multiclass_uses_argmax(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", n_train=12, n_val=6, n_test=3, classes=("a", "b", "c"))
    spec = TrainSpec("test_resnet", "frozen", epochs=1, image_size=32, batch_size=6, bootstrap_resamples=0)
    predictor = Predictor.load(train_classifier(spec, data, tmp_path / "job").artifact_path)
    for pred in predictor.predict([load_canonical(p) for p, _ in data.test]):
        assert pred.threshold is None and pred.positive_class is None
        assert pred.label == max(pred.probabilities, key=pred.probabilities.__getitem__)


def test_predictions_carry_conformal_sets_and_ood_flags(films_model: Trained) -> None:
    predictor = Predictor.load(films_model.result.artifact_path)
    art = predictor.artifact
    assert art.conformal["coverage"] == 0.9 and art.conformal["empirical_test_coverage"] is not None
    test = films_model.data.test
    preds = predictor.predict([load_canonical(p) for p, _ in test])
    for pred in preds:
        assert pred.coverage == 0.9 and pred.prediction_set and set(pred.prediction_set) <= set(art.class_names)
        assert pred.in_distribution is not None and pred.ood_score is not None and pred.ood_threshold is not None
        if pred.prediction_set == [pred.label]:  # a singleton set is the top class
            assert pred.probabilities[pred.label] >= 0.5
    covered = np.mean([art.class_names[y] in p.prediction_set for p, (_, y) in zip(preds, test, strict=True)])
    assert covered == pytest.approx(art.conformal["empirical_test_coverage"])
    assert covered >= 0.8


def test_threshold_argument_overrides_the_artifact(films_model: Trained) -> None:
    predictor = Predictor.load(films_model.result.artifact_path)
    images = [load_canonical(p) for p, _ in films_model.data.test[:6]]
    assert {p.label for p in predictor.predict(images, threshold=0.0)} == {"PNEUMONIA"}
    low = predictor.predict(images, threshold=1.01)
    assert {p.label for p in low} == {"NORMAL"} and all(p.threshold == 1.01 for p in low)
    assert all(p.threshold == predictor.artifact.threshold for p in predictor.predict(images))


def test_an_artifact_without_trust_fields_answers_none(trained: tuple[Path, list]) -> None:
    art = dataclasses.replace(ClassifierArtifact.load(trained[0]), conformal={}, ood={})
    (pred,) = Predictor(art).predict([load_canonical(trained[1][0][0])])
    assert pred.prediction_set is None and pred.coverage is None
    assert pred.in_distribution is None and pred.ood_score is None and pred.ood_threshold is None


def test_served_probabilities_apply_the_artifact_temperature(trained: tuple[Path, list], tmp_path: Path) -> None:
    """softmax(logits / T) with the artifact's T: a tiny run's T may be 1.0, so this one is set to 3.0."""
    artifact_path, test = trained
    art = dataclasses.replace(ClassifierArtifact.load(artifact_path), temperature=3.0)
    art.save(tmp_path / "t3.pt")
    images = [load_canonical(p) for p, _ in test]
    served = Predictor.load(tmp_path / "t3.pt").probabilities(images)
    x = torch.stack([to_model_input(im, image_size=art.image_size, mean=art.mean, std=art.std) for im in images])
    with torch.inference_mode():
        logits = art.build_model()(x)
    np.testing.assert_allclose(served, torch.softmax(logits / 3.0, dim=1).numpy(), atol=1e-5)
    assert not np.allclose(served, torch.softmax(logits, dim=1).numpy(), atol=1e-3)
