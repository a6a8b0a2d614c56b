"""The training recipe of issue 12: scanner augmentation, label smoothing, weight EMA, early stopping, baseline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from models.artifact import ClassifierArtifact
from pipelines.train import TrainData, TrainingCancelled, TrainSpec, train_classifier
from pipelines.training.data import augment, scanner_augment
from pipelines.training.loop import TrainingRun, selection_step
from pipelines.training.spec import BASELINE_RECIPE
from tests.pipelines.test_train import make_dataset, spec


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainData:
    return make_dataset(tmp_path_factory.mktemp("recipe"))


def textured(b: int = 4, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(60, 200, (b, size, size), dtype=torch.uint8, generator=g)


def run_phases(s: TrainSpec, data: TrainData, out: Path, **kw: object) -> TrainingRun:
    """The engine's phases as ``train_classifier`` orders them, without calibration, test and report."""
    run = TrainingRun(s, data, out, weights="none", on_progress=lambda e: None, should_stop=lambda: False)
    for k, v in kw.items():
        setattr(run, k, v)
    run.build_data()
    run.build_model()
    run.build_loss()
    run.build_optimizer()
    run.try_resume()
    return run


# ---- scanner augmentation -----------------------------------------------------------------------------


def test_scanner_augmentation_keeps_shape_and_range_and_is_seeded() -> None:
    x = textured()
    for seed in range(10):
        out = scanner_augment(x, torch.Generator().manual_seed(seed))
        assert out.shape == (4, 1, 64, 64) and out.dtype == torch.float32
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0 and not torch.isnan(out).any()
        assert torch.equal(out, scanner_augment(x, torch.Generator().manual_seed(seed)))
        assert not torch.allclose(out, augment(x, torch.Generator().manual_seed(seed)), atol=1e-2)
    a = scanner_augment(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(a, scanner_augment(x, torch.Generator().manual_seed(2)), atol=1e-2)


def test_scanner_augmentation_never_flips() -> None:
    img = torch.zeros(1, 64, 64, dtype=torch.uint8)
    img[0, 8:24, 8:24] = 255
    for seed in range(20):
        out = scanner_augment(img, torch.Generator().manual_seed(seed))[0, 0]
        core = out[9:55, 9:55]  # inside any collimation band (at most 12% of the side)
        ys, xs = torch.nonzero(core > 0.6, as_tuple=True)
        assert ys.float().mean() + 9 < 32 and xs.float().mean() + 9 < 32  # still top-left: a flip would be > 32


def test_scanner_augmentation_crops_collimation_borders() -> None:
    """Some films get a white band (only a band can make a whole edge line exactly 1) and some a black one."""
    x = textured(8)
    white = black = 0
    for seed in range(12):
        out = scanner_augment(x, torch.Generator().manual_seed(seed))[:, 0]
        for edge in (out[:, :2, :], out[:, -2:, :], out[:, :, :2], out[:, :, -2:]):
            white += int((edge.flatten(1) == 1.0).all(1).sum())
            black += int((edge.flatten(1) == 0.0).all(1).sum())
    assert white > 0 and black > 0


# ---- spec and baseline ----------------------------------------------------------------------------------


def test_baseline_recipe_round_trips_and_old_specs_load_as_baseline() -> None:
    base = spec(**BASELINE_RECIPE)
    assert TrainSpec.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    assert {k: getattr(base, k) for k in BASELINE_RECIPE} == BASELINE_RECIPE
    new = spec()
    assert TrainSpec.from_dict(new.to_dict()) == new and new.augment == "scanner" and new.ema_decay is not None
    # A job row stored before the recipe fields existed: augment was a bool, the other fields absent.
    stored = {k: v for k, v in base.to_dict().items() if k not in BASELINE_RECIPE or k == "early_stopping_patience"}
    assert TrainSpec.from_dict({**stored, "augment": True}) == base
    assert TrainSpec.from_dict({**stored, "augment": False}).augment == "none"


@pytest.mark.parametrize(
    ("field", "value"),
    [("augment", "heavy"), ("label_smoothing", 1.0), ("ema_decay", 1.0), ("early_stopping_metric", "f1")],
)
def test_recipe_fields_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        spec(**{field: value})


# ---- label smoothing, EMA, early stopping ---------------------------------------------------------------


def test_label_smoothing_changes_the_training_loss(data: TrainData, tmp_path: Path) -> None:
    losses = []
    for smoothing in (0.0, 0.2):
        run = run_phases(spec(epochs=1, label_smoothing=smoothing, ema_decay=None), data, tmp_path / str(smoothing))
        logits = torch.tensor([[4.0, -4.0], [-3.0, 3.0]])
        losses.append(float(run.loss(logits, torch.tensor([0, 1]))))
        run.fit()
        assert run.history[0]["val"]["loss"] is not None
        losses.append(run.history[0]["train_loss"])
    hard, hard_train, soft, soft_train = losses
    assert soft > hard + 0.05 and soft_train != hard_train


def test_ema_weights_differ_from_raw_and_are_what_the_artifact_holds(data: TrainData, tmp_path: Path) -> None:
    result = train_classifier(spec(epochs=1, ema_decay=0.9, bootstrap_resamples=50), data, tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    art = ClassifierArtifact.load(result.artifact_path).state_dict
    ema, raw = ckpt["ema"], ckpt["model"]
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    assert all(torch.equal(art[k], ema[k]) for k in ema)
    buffers = set(raw) - set(ema)  # BatchNorm statistics: the raw model's
    assert buffers and all(torch.equal(art[k], raw[k]) for k in buffers)


def test_resume_with_ema_reproduces_an_uninterrupted_run(data: TrainData, tmp_path: Path) -> None:
    s = spec(epochs=2, ema_decay=0.8, augment="scanner", early_stopping_patience=None)
    steps = {"n": 0}

    def stop_in_epoch_two() -> bool:
        steps["n"] += 1
        return steps["n"] > 4  # 3 steps per epoch

    interrupted = run_phases(s, data, tmp_path / "a", should_stop=stop_in_epoch_two)
    with pytest.raises(TrainingCancelled):
        interrupted.fit()
    resumed = run_phases(s, data, tmp_path / "a")
    assert resumed.epoch == 1 and resumed.ema is not None
    resumed.fit()
    fresh = run_phases(s, data, tmp_path / "b")
    fresh.fit()
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    for key in ("ema", "model", "best_state"):
        assert all(torch.allclose(a[key][k].float(), b[key][k].float(), atol=1e-6) for k in a[key]), key


def test_selection_step_rules() -> None:
    # auroc_loss: a saturated AUROC with a falling loss keeps improving; a clearly lower AUROC does not.
    assert selection_step("auroc_loss", 1.0, 0.30, 1.0, 0.40) == (True, True)
    assert selection_step("auroc_loss", 1.0, 0.3995, 1.0, 0.40) == (False, False)
    assert selection_step("auroc_loss", 0.99, 0.10, 1.0, 0.40) == (False, False)
    assert selection_step("auroc_loss", 0.95, 0.50, 0.90, 0.40) == (True, True)
    # auroc (baseline): a tie won on loss keeps the weights, not the clock.
    assert selection_step("auroc", 1.0, 0.30, 1.0, 0.40) == (True, False)
    assert selection_step("auroc", None, None, 1.0, 0.40) == (True, True)


@pytest.mark.parametrize(("metric", "epochs_run", "best_epoch"), [("auroc_loss", 5, 3), ("auroc", 3, 3)])
def test_early_stopping_stops_on_a_plateau(
    data: TrainData, tmp_path: Path, metric: str, epochs_run: int, best_epoch: int
) -> None:
    """Validation AUROC saturated at 1.0 from epoch 1; the loss falls until epoch 3, then stays flat."""
    losses = iter([0.5, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    s = spec(epochs=8, lr=1e-6, early_stopping_patience=2, early_stopping_metric=metric)
    run = run_phases(s, data, tmp_path)
    run.evaluate = lambda: {"loss": next(losses), "accuracy": 1.0, "auroc": 1.0}  # type: ignore[method-assign]
    run.fit()
    assert run.stopped_early and run.epoch == epochs_run and run.best_epoch == best_epoch


def test_baseline_recipe_trains_as_before(data: TrainData, tmp_path: Path) -> None:
    """The baseline has no EMA in its checkpoint and trains with hard labels and the basic augmentation."""
    s = dataclasses.replace(spec(epochs=1), **BASELINE_RECIPE)
    run = run_phases(s, data, tmp_path)
    run.fit()
    assert run.ema is None
    assert float(run.loss(torch.tensor([[4.0, -4.0]]), torch.tensor([0]))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(torch.tensor([[4.0, -4.0]]), torch.tensor([0]))), rel=1e-6
    )
