"""create_backbone: the timm factory wrapper."""

from __future__ import annotations

import pytest
import timm
import torch

from models.backbones import KNOWN_BACKBONES, classifier_of, create_backbone


def test_known_backbones_are_timm_models() -> None:
    assert {"resnet18", "resnet50", "efficientnet_b0", "efficientnet_b4", "test_resnet"} <= set(KNOWN_BACKBONES)
    assert all(timm.is_model(name) for name in KNOWN_BACKBONES)


@pytest.mark.parametrize(("name", "first_conv"), [("test_resnet", "conv1.0"), ("test_efficientnet", "conv_stem")])
def test_grayscale_first_conv_and_new_head(name: str, first_conv: str) -> None:
    model = create_backbone(name, weights="none", num_classes=3)
    conv = model.get_submodule(first_conv)
    assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == 1 and conv.weight.shape[1] == 1
    head = classifier_of(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 3
    with torch.inference_mode():
        assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_unknown_backbone_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg11'; known backbones: resnet18, .*test_efficientnet"):
        create_backbone("vgg11", weights="none", num_classes=2)


def test_unknown_weights_source() -> None:
    with pytest.raises(ValueError, match="weights source"):
        create_backbone("test_resnet", weights="ssl", num_classes=2)  # type: ignore[arg-type]
