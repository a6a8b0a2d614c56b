"""The one place backbones are created: a thin wrapper around ``timm.create_model``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from models.catalog import KNOWN_BACKBONES, check_backbone_name
from models.weights import LocalWeights, WeightsSource, WeightsUnavailable, ensure_imagenet_available

# Re-exported: callers know the catalogue as part of the backbone factory.
__all__ = [
    "KNOWN_BACKBONES",
    "check_backbone_name",
    "classifier_of",
    "create_backbone",
    "model_args",
    "pooled_features",
]

_logger = logging.getLogger(__name__)


def create_backbone(name: str, *, weights: WeightsSource, num_classes: int, in_chans: int = 1) -> torch.nn.Module:
    """Create ``name`` with a fresh ``num_classes`` head, adapting the first conv to ``in_chans`` (timm's way).

    ``weights``: ``"none"`` (random init), ``"imagenet"`` (timm's hub; raises ``WeightsUnavailable`` fast
    when offline) or ``LocalWeights(path)`` (an ImageNet state dict loaded through timm's pretrained
    machinery, so the first conv is summed over RGB and the 1000-class classifier dropped).
    """
    import timm

    check_backbone_name(name)
    kwargs: dict = dict(num_classes=num_classes, in_chans=in_chans)
    if weights == "none":
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights == "imagenet":
        ensure_imagenet_available(name)
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # hub errors come in many types (HTTP, OSError, hub-specific)
            raise WeightsUnavailable(
                f"ImageNet weights for {name} could not be loaded from the Hugging Face hub: {e}; "
                "register a local weights file instead"
            ) from e
    if isinstance(weights, LocalWeights):
        path = Path(weights.path)
        if not path.is_file():
            raise WeightsUnavailable(f"local weights file {path} for {name} does not exist")
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=1000), **kwargs
        )
    raise ValueError(f"unknown weights source {weights!r}; use 'none', 'imagenet' or LocalWeights(path)")


def classifier_of(model: torch.nn.Module) -> torch.nn.Module:
    """The model's classifier module (timm's ``get_classifier()``)."""
    head = model.get_classifier()  # type: ignore[operator]
    assert isinstance(head, torch.nn.Module)
    return head


def pooled_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features: timm's ``forward_features`` then ``forward_head(pre_logits=True)``."""
    feats = model.forward_features(x)  # type: ignore[operator]
    out = model.forward_head(feats, pre_logits=True)  # type: ignore[operator]
    assert isinstance(out, torch.Tensor)
    return out


def model_args(name: str, num_classes: int, in_chans: int = 1) -> dict:
    """The arguments that rebuild a backbone's architecture (everything except its weights)."""
    return {"backbone": name, "num_classes": num_classes, "in_chans": in_chans}
