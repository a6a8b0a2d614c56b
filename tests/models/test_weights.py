"""Weights sources: local ImageNet files through timm's pretrained loader, validation, fast hub failure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from models.backbones import create_backbone
from models.weights import LocalWeights, WeightsUnavailable, _hub_reachable, validate_weights_file


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return {k: v.clone() for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()}


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_are_loaded_and_adapted(imagenet_state: dict, tmp_path: Path, suffix: str) -> None:
    path = save(imagenet_state, tmp_path / f"test_resnet{suffix}")
    model = create_backbone("test_resnet", weights=LocalWeights(path), num_classes=2)
    got = model.state_dict()
    # timm adapts the RGB first conv to one channel by summing over the input channels.
    torch.testing.assert_close(got["conv1.0.weight"], imagenet_state["conv1.0.weight"].sum(dim=1, keepdim=True))
    for key in ("layer1.0.conv1.weight", "layer4.0.bn1.running_var", "conv1.1.weight"):
        assert torch.equal(got[key], imagenet_state[key]), key
    assert got["fc.weight"].shape == (2, imagenet_state["fc.weight"].shape[1])  # ImageNet head dropped


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_validate_accepts_matching_file(imagenet_state: dict, tmp_path: Path, suffix: str) -> None:
    info = validate_weights_file(save(imagenet_state, tmp_path / f"w{suffix}"), "test_resnet")
    assert info["backbone"] == "test_resnet" and info["tensors"] == len(imagenet_state)
    assert info["format"] == suffix.lstrip(".") and len(info["sha256"]) == 64


def test_validate_tolerates_other_classifier(imagenet_state: dict, tmp_path: Path) -> None:
    state = dict(
        imagenet_state, **{"fc.weight": torch.zeros(5, imagenet_state["fc.weight"].shape[1]), "fc.bias": torch.zeros(5)}
    )
    assert validate_weights_file(save(state, tmp_path / "w.pth"), "test_resnet")["tensors"] == len(state)


def test_validate_rejects_other_architecture(tmp_path: Path) -> None:
    other = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="does not fit backbone 'test_resnet'.*missing keys"):
        validate_weights_file(save(other, tmp_path / "eff.safetensors"), "test_resnet")


def test_validate_rejects_wrong_shapes(imagenet_state: dict, tmp_path: Path) -> None:
    state = dict(imagenet_state, **{"layer1.0.conv1.weight": torch.zeros(3, 3, 3, 3)})
    with pytest.raises(ValueError, match="shape mismatches.*layer1.0.conv1.weight"):
        validate_weights_file(save(state, tmp_path / "w.pth"), "test_resnet")


def test_validate_rejects_non_state_dicts(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="torch.load"):
        validate_weights_file(tmp_path / "junk.pth", "test_resnet")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        validate_weights_file(tmp_path / "list.pth", "test_resnet")
    with pytest.raises(ValueError, match="unknown backbone"):
        validate_weights_file(tmp_path / "list.pth", "alexnet")


def test_missing_local_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        create_backbone("test_resnet", weights=LocalWeights(tmp_path / "nope.safetensors"), num_classes=2)


def test_imagenet_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # HF_HUB_OFFLINE is how an air-gapped site (or a test) says "no hub": this holds with or without internet.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("models.weights._hub_cached", lambda hub_id: False)
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="ImageNet weights for resnet18 .*register a local weights file"):
        create_backbone("resnet18", weights="imagenet", num_classes=2)
    assert time.monotonic() - t0 < 20


def test_hub_offline_setting_is_honoured_without_a_network_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.monotonic()
    assert _hub_reachable() is False
    assert time.monotonic() - t0 < 1.0  # no connect attempt at all
