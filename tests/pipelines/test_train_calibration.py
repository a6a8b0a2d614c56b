"""Pure parts of the engine: lr schedule, calibration, threshold, metrics, layer groups, augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.backbones import classifier_of, create_backbone
from pipelines.training import calibration as C
from pipelines.training.data import augment, batches, class_weights, epoch_order
from pipelines.training.evaluation import bootstrap_auroc_ci, evaluate_predictions, rank_auroc
from pipelines.training.loop import lr_at
from pipelines.training.strategies import layer_groups, lr_scales, unfrozen_count


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (3, 1.0), (4, 1.0), (14, 0.505), (24, 0.01), (99, 0.01)])
def test_lr_at_warmup_then_cosine(step: int, expected: float) -> None:
    assert lr_at(step, base_lr=1.0, warmup_steps=4, total_steps=24) == pytest.approx(expected)


def test_lr_at_is_monotone_after_warmup() -> None:
    lrs = [lr_at(s, base_lr=1e-3, warmup_steps=5, total_steps=50) for s in range(50)]
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4:] == sorted(lrs[4:], reverse=True)


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_layer_groups_cover_every_parameter_once_with_head_last(name: str) -> None:
    model = create_backbone(name, weights="none", num_classes=2)
    groups = layer_groups(model)
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    head = {n for n, p in model.named_parameters() if any(p is q for q in classifier_of(model).parameters())}
    assert set(groups[-1]) == head and len(groups) >= 4


def test_unfreeze_schedule_and_scales() -> None:
    assert [unfrozen_count("gradual", e, 4, 2) for e in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert unfrozen_count("frozen", 5, 4, 1) == 1 and unfrozen_count("full", 0, 4, 1) == 4
    assert lr_scales(3, 0.5) == [0.25, 0.5, 1.0]


def test_temperature_scaling_lowers_nll_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    clean = np.stack([-(labels * 2 - 1) * 1.0, (labels * 2 - 1) * 1.0], 1) + rng.normal(0, 1.5, (400, 2))
    logits = clean * 6.0  # overconfident
    t = C.fit_temperature(logits, labels)
    assert t > 2.0
    before, after = C.nll(logits, labels), C.nll(logits, labels, t)
    assert before is not None and after is not None and after < before - 0.5
    ece_before = C.expected_calibration_error(C.softmax(logits), labels)
    ece_after = C.expected_calibration_error(C.softmax(logits, t), labels)
    assert ece_before is not None and ece_after is not None and ece_after < ece_before


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_threshold_meets_target_sensitivity_and_is_highest(target: float) -> None:
    rng = np.random.default_rng(1)
    p = rng.random(101)
    is_pos = rng.random(101) < 0.4
    t, note = C.threshold_for_sensitivity(p, is_pos, target)
    assert note is None
    assert (p[is_pos] >= t).mean() >= target
    higher = np.nextafter(t, 2.0)
    assert (p[is_pos] >= higher).mean() < target  # any higher threshold misses the target


def test_threshold_without_positives_falls_back_with_note() -> None:
    t, note = C.threshold_for_sensitivity(np.array([0.2, 0.4]), np.array([False, False]), 0.95)
    assert t == 0.5 and note is not None and "no positive" in note


def test_rank_auroc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, (3, 40)).astype(float)
    truth = rng.random((3, 40)) < 0.5
    for s, y in zip(scores, truth, strict=True):
        assert rank_auroc(s[None], y[None])[0] == pytest.approx(roc_auc_score(y, s))


def test_binary_metrics_and_bootstrap_ci() -> None:
    probs1 = np.array([0.1, 0.2, 0.8, 0.9, 0.6, 0.4, 0.7, 0.3])
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    m = evaluate_predictions(np.stack([1 - probs1, probs1], 1), labels, positive=1, threshold=0.5, resamples=500)
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["sensitivity"] == m["specificity"] == m["ppv"] == m["npv"] == m["accuracy"] == 0.75
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs1))
    lo, hi = m["auroc_ci95"]
    assert 0.0 <= lo <= m["auroc"] <= hi <= 1.0
    again = bootstrap_auroc_ci(np.stack([1 - probs1, probs1], 1), labels, 1, resamples=500, seed=0)
    assert again == m["auroc_ci95"]  # seeded


def test_class_weights_and_balanced_order() -> None:
    labels = torch.tensor([0] * 30 + [1] * 10)
    w = class_weights(labels, 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])
    order = epoch_order(labels, seed=0, epoch=0, balanced=True)
    assert 0.35 < labels[order].float().mean() < 0.65
    assert torch.equal(order, epoch_order(labels, seed=0, epoch=0, balanced=True))
    assert not torch.equal(order, epoch_order(labels, seed=0, epoch=1, balanced=True))
    assert [b.numel() for b in batches(torch.arange(9), 4)] == [4, 4]  # no batch of one for BatchNorm


def test_augmentation_is_mild_and_never_flips() -> None:
    img = torch.zeros(1, 64, 64, dtype=torch.uint8)
    img[0, 8:24, 8:24] = 255  # a bright square in the top-left
    for seed in range(20):
        out = augment(img, torch.Generator().manual_seed(seed))[0, 0]
        assert out.shape == (64, 64) and 0.0 <= out.min() and out.max() <= 1.0
        ys, xs = torch.nonzero(out > 0.5, as_tuple=True)
        assert ys.float().mean() < 24 and xs.float().mean() < 24  # still top-left: no flips, small motion
        assert not math.isnan(float(out.sum()))
