"""train_classifier end to end on tiny synthetic X-rays: strategies, resume, cancellation, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.artifact import ClassifierArtifact
from models.backbones import create_backbone
from pipelines.train import TrainData, TrainingCancelled, TrainSpec, positive_class_index, train_classifier
from pipelines.training.strategies import layer_groups


def write_xray(path: Path, positive: bool, rng: np.random.Generator, shape: tuple[int, int] = (48, 40)) -> Path:
    """A canonical PNG: dark noise, plus a bright blob for the positive class (learnable in a few steps)."""
    a = rng.integers(0, 80, shape).astype(np.uint8)
    if positive:
        r, c = rng.integers(4, shape[0] // 2), rng.integers(4, shape[1] // 2)
        a[r : r + shape[0] // 3, c : c + shape[1] // 3] = 230
    Image.fromarray(a, mode="L").save(path)
    return path


def make_dataset(
    root: Path,
    *,
    n_train: int = 24,
    n_val: int = 8,
    n_test: int = 8,
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA"),
    seed: int = 0,
) -> TrainData:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def split(name: str, n: int) -> list[tuple[Path, int]]:
        items = []
        for i in range(n):
            y = i % len(classes)
            path = root / f"{name}_{i}.png"
            if len(classes) == 2:
                write_xray(path, positive=y == positive_class_index(list(classes)), rng=rng)
            else:  # multiclass: blob position encodes the class
                a = rng.integers(0, 80, (40, 40)).astype(np.uint8)
                a[:, y * 40 // len(classes) : (y + 1) * 40 // len(classes)] = 220
                Image.fromarray(a, mode="L").save(path)
            items.append((path, y))
        return items

    return TrainData(list(classes), split("train", n_train), split("val", n_val), split("test", n_test))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainData:
    return make_dataset(tmp_path_factory.mktemp("xrays"))


def spec(**kw: object) -> TrainSpec:
    base: dict = dict(
        backbone="test_resnet", strategy="full", epochs=2, image_size=32, batch_size=8, lr=3e-3, bootstrap_resamples=200
    )
    base.update(kw)
    return TrainSpec(**base)


def initial_state(s: TrainSpec, num_classes: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(s.seed)  # train_classifier seeds the same way before building the backbone
    return {
        k: v.clone()
        for k, v in create_backbone(s.backbone, weights="none", num_classes=num_classes).state_dict().items()
    }


def test_spec_round_trip_and_validation() -> None:
    s = spec(strategy="gradual", early_stopping_patience=2)
    assert TrainSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="strategy"):
        spec(strategy="partial")
    with pytest.raises(ValueError, match="unknown TrainSpec fields"):
        TrainSpec.from_dict({**s.to_dict(), "colour": "blue"})


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["NORMAL", "PNEUMONIA"], 1), (["Pneumonia", "normal"], 0), (["b_sick", "a_ok"], 0), (["x", "y", "z"], None)],
)
def test_positive_class_rule(names: list[str], expected: int | None) -> None:
    assert positive_class_index(names) == expected


def test_full_learns_and_writes_artifact_and_report(
    data: TrainData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[dict] = []
    result = train_classifier(
        spec(epochs=3), data, tmp_path, on_progress=events.append, extra_metadata={"job_id": "j1"}
    )
    assert result.val_metrics["auroc"] >= 0.9 and result.test_metrics["auroc"] >= 0.9
    art = ClassifierArtifact.load(result.artifact_path)
    assert art.positive_class == "PNEUMONIA" and art.threshold is not None and art.temperature > 0
    assert art.metadata["extra_metadata"] == {"job_id": "j1"}
    assert art.operating_point["sensitivity"] >= 0.95
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    assert report["test_metrics"]["auroc_ci95"] is not None
    for png in ("roc.png", "curves.png", "calibration.png", "confusion.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
    # Issue 9: scratch runs flagged, calibration that never makes things worse, the trust layer's parameters.
    assert "random weights" in caplog.text and art.pretrained is False and art.weights == "none"
    assert report["pretrained"] is False and "random weights" in report["warnings"][0]
    assert art.calibration["method"] == "none" and "too small" in art.calibration["reason"]  # 8 val films
    assert art.temperature == 1.0 and report["calibration"]["ece_after"] == report["calibration"]["ece_before"]
    op = art.operating_point
    assert op["threshold"] == art.threshold and op["n_pos"] + op["n_neg"] == 8 and "sensitivity" in op["rule"]
    assert op["sensitivity_ci95"][0] <= op["sensitivity"] <= op["sensitivity_ci95"][1]
    assert art.preprocessing["image_size"] == 32 and art.preprocessing["max_side"] == 512
    assert art.conformal["n_cal"] == 8 and art.conformal["empirical_test_coverage"] is not None
    assert art.ood["threshold"] > 0 and art.ood["n_val"] == 8 and art.fitness["assessed"]
    assert len(report["val_predictions"]["p_pos"]) == 8 and len(report["val_predictions"]["is_pos"]) == 8
    assert art.val_predictions["p_pos"] == report["val_predictions"]["p_pos"]
    table = report["threshold_table"]["validation"]
    assert art.threshold in [r["threshold"] for r in table] and {"ppv", "npv"} <= set(table[0])
    assert report["reliability"]["before"] and "tensor" not in json.dumps(report["ood"])
    phases = [e["phase"] for e in events]
    assert phases[-1] == "done" and {"training", "evaluating", "calibrating", "testing"} <= set(phases)
    json.dumps(events)  # every event is JSON-able
    epoch_ends = [e for e in events if e["phase"] == "training" and e.get("val")]
    assert [e["epoch"] for e in epoch_ends] == [1, 2, 3]
    on_gpu = torch.cuda.is_available()  # spec() trains on "auto": the GPU when there is one
    assert all((e["gpu_peak_mem_mb"] > 0 if on_gpu else e["gpu_peak_mem_mb"] is None) for e in epoch_ends)
    assert all(e["throughput_img_s"] > 0 for e in epoch_ends)
    steps = [e for e in events if e["phase"] == "training"]
    assert [e["epoch"] for e in steps] == sorted(e["epoch"] for e in steps) and {e["epoch"] for e in steps} == {1, 2, 3}
    assert all(e["steps_per_epoch"] == 3 and e["epochs"] == 3 and e["eta_s"] is not None for e in steps)
    assert steps[-1]["step"] == 9 and steps[-1]["eta_s"] == 0.0


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_frozen_keeps_backbone_and_bn_stats_identical(data: TrainData, tmp_path: Path, backbone: str) -> None:
    s = spec(strategy="frozen", epochs=2, backbone=backbone)
    before = initial_state(s)
    result = train_classifier(s, data, tmp_path)
    after = ClassifierArtifact.load(result.artifact_path).state_dict
    head = set(layer_groups(create_backbone(backbone, weights="none", num_classes=2))[-1])
    assert head and head <= set(before)
    assert any("running_mean" in k for k in before)
    for k, v in before.items():
        if k in head:
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), f"{k} changed in frozen strategy"


def test_gradual_unfreezes_top_down_with_lower_lrs(data: TrainData, tmp_path: Path) -> None:
    s = spec(strategy="gradual", epochs=3, unfreeze_every=1, layer_decay=0.5, warmup_epochs=0)
    before = initial_state(s)
    events: list[dict] = []
    result = train_classifier(s, data, tmp_path, on_progress=events.append)
    epoch_ends = [e for e in events if e["phase"] == "training" and e.get("val")]
    assert [e["unfrozen_groups"] for e in epoch_ends] == [1, 2, 3]
    n = epoch_ends[0]["total_groups"]
    for e in epoch_ends:
        groups = sorted(int(g) for g in e["lr_by_group"])
        assert groups == list(range(n - e["unfrozen_groups"], n))  # always the top groups
        lrs = [e["lr_by_group"][str(g)] for g in groups]
        assert all(lo < hi for lo, hi in zip(lrs, lrs[1:], strict=False))  # earlier group, lower lr
        assert lrs[-1] == pytest.approx(e["lr"])
    # Groups never unfrozen (all but the top three) keep their initial weights.
    after = ClassifierArtifact.load(result.artifact_path).state_dict
    model = create_backbone("test_resnet", weights="none", num_classes=2)
    never = [name for g in layer_groups(model)[: n - 3] for name in g]
    assert never and all(torch.equal(before[k], after[k]) for k in never)
    # ...and so do the BatchNorm running statistics of those groups (frozen BN stays in eval mode).
    prefixes = {k.rsplit(".", 1)[0] for k in never}
    stats = [k for k in before if "running_" in k and k.rsplit(".", 1)[0] in prefixes]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    trained = [k for k in before if "running_" in k and k.startswith("layer4")]
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_full_uses_layer_decay(data: TrainData, tmp_path: Path) -> None:
    events: list[dict] = []
    train_classifier(spec(epochs=1, layer_decay=0.5), data, tmp_path, on_progress=events.append)
    e = [e for e in events if e["phase"] == "training" and e.get("val")][0]
    n = e["total_groups"]
    assert e["unfrozen_groups"] == n and len(e["lr_by_group"]) == n
    for g in range(n - 1):
        assert e["lr_by_group"][str(g)] == pytest.approx(e["lr_by_group"][str(g + 1)] * 0.5)


def test_resume_continues_after_last_checkpoint(data: TrainData, tmp_path: Path) -> None:
    s = spec(epochs=3)
    stop_after = {"steps": 0}

    def stop_in_epoch_two() -> bool:
        stop_after["steps"] += 1
        return stop_after["steps"] > 4  # 3 steps per epoch: epoch 1 completes, epoch 2 is interrupted

    with pytest.raises(TrainingCancelled):
        train_classifier(s, data, tmp_path, should_stop=stop_in_epoch_two)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["config"]["spec"] == s.to_dict()
    assert {"model", "optimizer", "scheduler", "best_metric", "model_args", "rng"} <= set(ckpt)
    events: list[dict] = []
    result = train_classifier(s, data, tmp_path, on_progress=events.append)
    trained_epochs = sorted({e["epoch"] for e in events if e["phase"] == "training" and e.get("val")})
    assert trained_epochs == [2, 3]  # epoch 1 was not retrained
    assert min(e["step"] for e in events if e["phase"] == "training") > 3
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3
    assert result.report_path is not None
    report = json.loads(result.report_path.read_text())
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    # The interrupted-then-resumed run equals an uninterrupted one (per-epoch seeded order and augmentation).
    fresh = train_classifier(s, data, tmp_path / "fresh")
    a = ClassifierArtifact.load(result.artifact_path).state_dict
    b = ClassifierArtifact.load(fresh.artifact_path).state_dict
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_cancel_keeps_checkpoint_and_writes_nothing_new(data: TrainData, tmp_path: Path) -> None:
    s = spec(epochs=2)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # after epoch 1's three steps

    with pytest.raises(TrainingCancelled):
        train_classifier(s, data, tmp_path, should_stop=stop)
    ckpt_path = tmp_path / "checkpoints" / "last.pt"
    assert torch.load(ckpt_path, weights_only=True)["epoch"] == 1
    assert not (tmp_path / "model.pt").exists()
    mtime = ckpt_path.stat().st_mtime_ns
    with pytest.raises(TrainingCancelled):
        train_classifier(s, data, tmp_path, should_stop=lambda: True)
    assert ckpt_path.stat().st_mtime_ns == mtime


def test_checkpoint_for_other_spec_is_not_resumed(data: TrainData, tmp_path: Path) -> None:
    train_classifier(spec(epochs=1), data, tmp_path)
    events: list[dict] = []
    train_classifier(spec(epochs=1, lr=1e-3), data, tmp_path, on_progress=events.append)
    assert [e["epoch"] for e in events if e["phase"] == "training" and e.get("val")] == [1]


def test_deterministic_given_seed(data: TrainData, tmp_path: Path) -> None:
    # Bit-exact reruns are a CPU promise; on a GPU cuDNN autotuning and atomics make reruns differ slightly.
    s = spec(epochs=2, class_balance="sampler", device="cpu")
    r1 = train_classifier(s, data, tmp_path / "a")
    r2 = train_classifier(s, data, tmp_path / "b")
    a, b = ClassifierArtifact.load(r1.artifact_path), ClassifierArtifact.load(r2.artifact_path)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert r1.val_metrics == r2.val_metrics and r1.test_metrics == r2.test_metrics
    assert a.temperature == b.temperature and a.threshold == b.threshold


def test_tiny_and_single_class_splits_do_not_crash(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", n_train=6, n_val=1, n_test=1)  # one image each: a single class
    result = train_classifier(spec(epochs=1, strategy="frozen", batch_size=4), d, tmp_path / "out")
    assert result.val_metrics["auroc"] is None and result.val_metrics["notes"]
    assert result.test_metrics["auroc"] is None and result.test_metrics["auroc_ci95"] is None
    assert (tmp_path / "out" / "report" / "roc.png").exists()


def test_multiclass_uses_argmax_and_macro_auroc(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", n_train=24, n_val=9, n_test=9, classes=("bacterial", "normal", "viral"))
    result = train_classifier(spec(epochs=3, strategy="full"), d, tmp_path / "out")
    art = ClassifierArtifact.load(result.artifact_path)
    assert art.positive_class is None and art.threshold is None
    assert result.test_metrics["auroc"] is not None and len(result.test_metrics["confusion_matrix"]) == 3


def test_early_stopping_on_flat_validation_auroc(data: TrainData, tmp_path: Path) -> None:
    # lr so small nothing changes: val AUROC never improves after epoch 1, so patience 1 stops after epoch 2.
    s = spec(epochs=5, lr=1e-12, early_stopping_patience=1, early_stopping_metric="auroc")
    result = train_classifier(s, data, tmp_path)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["stopped_early"] and [h["epoch"] for h in report["history"]] == [1, 2]
    # A tie on AUROC goes to the epoch with a clearly lower validation loss (BatchNorm statistics still move).
    first, second = (h["val"] for h in report["history"])
    assert second["auroc"] == first["auroc"]
    assert result.best_epoch == (2 if second["loss"] < first["loss"] - 1e-3 else 1)


def test_trains_from_local_imagenet_weights(data: TrainData, tmp_path: Path) -> None:
    import safetensors.torch
    import timm

    from models.weights import LocalWeights

    torch.manual_seed(7)
    imagenet = timm.create_model("test_resnet", pretrained=False).state_dict()
    path = tmp_path / "test_resnet.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in imagenet.items()}, str(path))
    result = train_classifier(spec(strategy="frozen", epochs=1), data, tmp_path / "job", weights=LocalWeights(path))
    art = ClassifierArtifact.load(result.artifact_path)
    # Frozen backbone: the artifact still holds the file's weights, first conv summed over RGB by timm.
    torch.testing.assert_close(art.state_dict["conv1.0.weight"], imagenet["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(art.state_dict["layer3.0.conv2.weight"], imagenet["layer3.0.conv2.weight"])
    assert art.metadata["weights"] == "local:test_resnet.safetensors"
    assert art.pretrained is True and art.weights == "local:test_resnet.safetensors"
    report = json.loads(result.report_path.read_text())  # type: ignore[union-attr]
    assert report["pretrained"] is True and report["warnings"] == []


def test_frozen_features_are_computed_once_per_image(
    data: TrainData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.training.loop as loop

    seen: list[int] = []
    real = loop.pooled_features

    def counting(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return real(model, x)

    monkeypatch.setattr(loop, "pooled_features", counting)
    train_classifier(spec(strategy="frozen", epochs=4), data, tmp_path)
    # Not once per epoch: train and val once (the OOD fit reuses the cache), the test split once for its OOD rate.
    assert sum(seen) == len(data.train) + len(data.val) + len(data.test)


def test_finished_run_is_not_retrained(data: TrainData, tmp_path: Path) -> None:
    first = train_classifier(spec(epochs=1), data, tmp_path)
    events: list[dict] = []
    second = train_classifier(spec(epochs=1), data, tmp_path, on_progress=events.append)
    assert not [e for e in events if e["phase"] == "training"]
    assert second.val_metrics == first.val_metrics and second.test_metrics == first.test_metrics


@pytest.mark.parametrize("strategy", ["frozen", "full"])
def test_empty_validation_and_test_splits_do_not_crash(tmp_path: Path, strategy: str) -> None:
    d = make_dataset(tmp_path / "d", n_train=6, n_val=0, n_test=0)
    result = train_classifier(spec(epochs=2, strategy=strategy, batch_size=4), d, tmp_path / "out")
    assert result.best_epoch == 2  # nothing to select on: the latest weights are kept
    assert result.val_metrics["n"] == 0 and result.val_metrics["auroc"] is None
    assert result.test_metrics["n"] == 0 and result.test_metrics["notes"]
    art = ClassifierArtifact.load(result.artifact_path)
    assert art.threshold == 0.5 and "no positive" in art.operating_point["note"]


def test_cancel_while_caching_frozen_features(data: TrainData, tmp_path: Path) -> None:
    with pytest.raises(TrainingCancelled, match="caching"):
        train_classifier(spec(strategy="frozen"), data, tmp_path, should_stop=lambda: True)
    assert not (tmp_path / "checkpoints" / "last.pt").exists() and not (tmp_path / "model.pt").exists()
