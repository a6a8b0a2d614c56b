"""Warm start from a registered model's artifact: class mapping, head rows, and fewer epochs to the same AUROC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.artifact import ClassifierArtifact
from models.backbones import classifier_of, create_backbone
from pipelines.train import TrainData, TrainSpec, train_classifier
from pipelines.training.warm_start import InitState, apply_init_state, load_init_state, match_classes
from tests.pipelines.conftest import CLASSES, write_films

SCRATCH_EPOCHS = 3


def spec(epochs: int, lr: float = 3e-3) -> TrainSpec:
    return TrainSpec("test_resnet", "full", epochs=epochs, image_size=48, batch_size=16, lr=lr, bootstrap_resamples=100)


def val_aurocs(report: Path) -> list[float]:
    return [float(h["val"]["auroc"]) for h in json.loads(report.read_text())["history"]]


def first_epoch_reaching(aurocs: list[float], target: float) -> int | None:
    return next((i + 1 for i, a in enumerate(aurocs) if a >= target), None)


def films(root: Path, seed: int, class_names: list[str]) -> TrainData:
    """40 films a class for training and 40 for validation (fewer make validation AUROC too noisy to compare)."""
    index = [class_names.index(c) for c in CLASSES]  # write_films labels in CLASSES order
    split = {
        name: [(p, index[y]) for p, y in write_films(root, name, n, seed=seed + i)]
        for i, (name, n) in enumerate((("train", 40), ("val", 40), ("test", 5)))
    }
    return TrainData(list(class_names), split["train"], split["val"], split["test"])


def test_warm_start_reaches_scratch_auroc_in_fewer_epochs(tmp_path: Path) -> None:
    scratch = train_classifier(spec(SCRATCH_EPOCHS), films(tmp_path / "a", 1, CLASSES), tmp_path / "scratch")
    scratch_aurocs = val_aurocs(scratch.report_path)
    target = max(scratch_aurocs) - 0.02  # the scratch run's best validation AUROC, less validation noise

    # A fresh draw of films (other seeds) with the classes listed in the other order: head rows follow the names.
    data = films(tmp_path / "b", 11, list(reversed(CLASSES)))
    init = load_init_state(scratch.artifact_path, data.class_names, model_name="pneumonia", version=1)
    assert init.mapping == {"PNEUMONIA": "PNEUMONIA", "NORMAL": "NORMAL"}
    warm = train_classifier(spec(1, lr=1e-3), data, tmp_path / "warm", init_state=init)  # fine-tuning: lower lr
    warm_aurocs = val_aurocs(warm.report_path)
    assert first_epoch_reaching(warm_aurocs, target) == 1, (scratch_aurocs, warm_aurocs)
    # On the same fresh films, one epoch from scratch (same recipe) is well short of it.
    fresh = val_aurocs(train_classifier(spec(1, lr=1e-3), data, tmp_path / "fresh").report_path)
    assert warm_aurocs[0] > fresh[0] + 0.05, (warm_aurocs, fresh)

    artifact = ClassifierArtifact.load(warm.artifact_path)
    assert artifact.weights == "init:pneumonia/v1" and artifact.pretrained is True
    assert artifact.metadata["warm_start"]["artifact_sha256"] == init.sha256
    report = json.loads(warm.report_path.read_text())
    assert report["warm_start"].startswith("warm-started from pneumonia v1 (artifact sha256 ")


def toy_init(classes: list[str], mapping: dict[str, str | None]) -> tuple[InitState, torch.nn.Module]:
    torch.manual_seed(0)
    source = create_backbone("test_resnet", weights="none", num_classes=len(classes))
    init = InitState(
        state_dict=source.state_dict(),
        backbone="test_resnet",
        class_names=classes,
        mapping=mapping,
        model_name="m",
        version=2,
        sha256="0" * 64,
        mean=0.5,
        std=0.25,
    )
    return init, source


def test_head_rows_follow_the_mapping_and_unmapped_classes_get_fresh_rows() -> None:
    init, source = toy_init(["A", "B"], {"B": "B", "A": "A", "C": None})
    torch.manual_seed(5)
    target = create_backbone("test_resnet", weights="none", num_classes=3)
    fresh_row = classifier_of(target).weight[2].detach().clone()  # type: ignore[index]
    apply_init_state(target, init, ["B", "A", "C"])
    old_w, new_w = classifier_of(source).weight, classifier_of(target).weight
    assert torch.equal(new_w[0], old_w[1]) and torch.equal(new_w[1], old_w[0])  # type: ignore[index]
    assert torch.equal(new_w[2], fresh_row)  # type: ignore[index]
    body = [k for k in source.state_dict() if not k.startswith("fc.") and "num_batches" not in k]
    assert all(torch.equal(source.state_dict()[k], target.state_dict()[k]) for k in body)


@pytest.mark.parametrize(
    ("old", "new", "class_map", "expected"),
    [
        (["NORMAL", "PNEUMONIA"], ["PNEUMONIA", "NORMAL"], None, {"PNEUMONIA": "PNEUMONIA", "NORMAL": "NORMAL"}),
        (["NORMAL", "PNEUMONIA"], ["NORMAL", "OPACITY"], {"OPACITY": "PNEUMONIA"}, None),
        (["NORMAL", "PNEUMONIA"], ["NORMAL", "COVID"], {"COVID": None}, {"NORMAL": "NORMAL", "COVID": None}),
    ],
)
def test_match_classes(old: list[str], new: list[str], class_map: dict | None, expected: dict | None) -> None:
    mapping = match_classes(old, new, class_map)
    assert mapping == (expected or {"NORMAL": "NORMAL", "OPACITY": "PNEUMONIA"})


@pytest.mark.parametrize(
    ("new", "class_map", "named"),
    [
        (["NORMAL", "COVID"], None, "COVID"),
        (["NORMAL", "PNEUMONIA"], {"EFFUSION": "NORMAL"}, "EFFUSION"),
        (["NORMAL", "COVID"], {"COVID": "EFFUSION"}, "EFFUSION"),
    ],
)
def test_match_classes_names_what_does_not_match(new: list[str], class_map: dict | None, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        match_classes(["NORMAL", "PNEUMONIA"], new, class_map)


def test_one_source_of_weights_and_the_same_backbone(tmp_path: Path) -> None:
    init, _ = toy_init(list(CLASSES), {c: c for c in CLASSES})
    data = TrainData(list(CLASSES), [], [], [])
    with pytest.raises(ValueError, match="either weights"):
        train_classifier(spec(1), data, tmp_path, weights="imagenet", init_state=init)
    other = TrainSpec("test_efficientnet", "full", epochs=1, image_size=48, batch_size=4)
    with pytest.raises(ValueError, match="test_resnet.*test_efficientnet"):
        train_classifier(other, data, tmp_path, init_state=init)


def test_a_changed_artifact_is_refused(tmp_path: Path) -> None:
    init, source = toy_init(list(CLASSES), {})
    path = tmp_path / "model.pt"
    ClassifierArtifact(
        state_dict=source.state_dict(),
        backbone="test_resnet",
        model_args={},
        class_names=list(CLASSES),
        image_size=48,
        mean=0.5,
        std=0.25,
    ).save(path)
    with pytest.raises(ValueError, match="changed since the job was created"):
        load_init_state(path, list(CLASSES), model_name="m", version=1, expected_sha256="f" * 64)
    assert load_init_state(path, list(CLASSES), model_name="m", version=1).mapping == {c: c for c in CLASSES}
