"""Grad-CAM heatmaps for any timm CNN classifier, with the same preprocessing as inference.

Generic by construction: the explained layer is the last feature map, ``model.forward_features(x)``,
and the scores come from ``model.forward_head(features)``; no per-architecture layer names. The
backbone runs without autograd, then only the feature map requires a gradient, so the head's
backward pass is all that is computed and no parameter's ``.grad`` is touched.

Do not call these functions inside ``torch.inference_mode()``: autograd is disabled there for good
(tensors made in it can never take part in a backward pass), so ``grad_cam`` raises ``RuntimeError``.
``torch.no_grad()`` callers are fine: gradients are enabled locally.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.preprocess import to_model_input

if TYPE_CHECKING:
    from models.artifact import ClassifierArtifact
    from pipelines.infer import Predictor

_logger = logging.getLogger(__name__)

# How strongly the colour map covers the X-ray where the cam is 1 (0 where it is 0).
OVERLAY_ALPHA = 0.5
COLORMAP = "jet"


def grad_cam(model: nn.Module, x: torch.Tensor, *, target_class: int) -> np.ndarray:
    """Grad-CAM of ``target_class``'s logit for one input ``x`` (1, C, S, S): float32 (S, S) in [0, 1].

    The model is switched to (and left in) eval mode, so BatchNorm and dropout behave as at inference.
    A cam with no positive evidence anywhere is all zeros.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("grad_cam needs autograd: call it outside torch.inference_mode()")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one input of shape (1, C, S, S), got {tuple(x.shape)}")
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    # clone(): an inference tensor made by a caller's earlier inference_mode block becomes a normal one.
    x = x.detach().clone().to(device)
    with torch.no_grad():
        features = model.forward_features(x)  # type: ignore[operator]
    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(features)  # type: ignore[operator]
        num_classes = logits.shape[-1]
        if not 0 <= target_class < num_classes:
            raise ValueError(f"target_class {target_class} out of range for {num_classes} classes")
        (grads,) = torch.autograd.grad(logits[0, target_class], features)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)  # one weight per channel: pooled gradient
        cam = F.relu((weights * features).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam.float(), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        cam = _unit_range(cam[0, 0])
    return cam.cpu().numpy().astype(np.float32)


def _unit_range(cam: torch.Tensor) -> torch.Tensor:
    lo, hi = cam.min(), cam.max()
    if not torch.isfinite(hi) or hi - lo <= 1e-12:
        return torch.zeros_like(cam)
    return ((cam - lo) / (hi - lo)).clamp_(0.0, 1.0)


def cam_to_image_shape(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map a square model-input cam back onto an ``(H, W)`` image, undoing ``resize_square``.

    ``resize_square`` pads the image to a centred square of side ``max(H, W)`` and resizes it, so the
    cam is resized to that square and the padding cropped off; a cam already at ``(H, W)`` is returned.
    """
    cam = np.asarray(cam, dtype=np.float32)
    h, w = int(shape[0]), int(shape[1])
    if cam.shape == (h, w):
        return cam
    if cam.ndim != 2:
        raise ValueError(f"expected a 2-D cam, got shape {cam.shape}")
    side = max(h, w)
    t = torch.from_numpy(np.ascontiguousarray(cam))[None, None]
    if cam.shape[0] == cam.shape[1]:
        square = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
        top, left = (side - h) // 2, (side - w) // 2
        out = square[top : top + h, left : left + w]
    else:  # not a model-input cam: plain resize
        out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return out.clamp(0.0, 1.0).numpy().astype(np.float32)


def heatmap_overlay(pixels: np.ndarray, cam: np.ndarray) -> bytes:
    """PNG (RGB, the original image's H x W) of the X-ray with ``cam`` as a colour-map overlay."""
    from matplotlib import colormaps
    from PIL import Image

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a uint8 HxW image, got {pixels.dtype} with shape {pixels.shape}")
    cam = cam_to_image_shape(np.clip(np.nan_to_num(cam), 0.0, 1.0), pixels.shape)
    gray = np.repeat(pixels[..., None].astype(np.float32) / 255.0, 3, axis=2)
    colour = colormaps[COLORMAP](cam)[..., :3].astype(np.float32)
    alpha = (OVERLAY_ALPHA * cam)[..., None]
    rgb = np.rint(((1.0 - alpha) * gray + alpha * colour) * 255.0).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def explain(
    source: ClassifierArtifact | Predictor,
    pixels: np.ndarray,
    target_class: int | str | None = None,
) -> tuple[np.ndarray, bytes]:
    """Grad-CAM for one canonical uint8 HxW image: ``(cam at H x W in [0, 1], overlay PNG bytes)``.

    ``source`` is a loaded ``Predictor`` (its model is reused) or a ``ClassifierArtifact`` (a model is
    built for this call). ``target_class`` is a class index or name; ``None`` explains the artifact's
    positive class when it has one (what drives the pneumonia score), else the top-scoring class.
    """
    artifact, model = _resolve(source)
    x = to_model_input(pixels, image_size=artifact.image_size, mean=artifact.mean, std=artifact.std)[None]
    target = _target_index(artifact, model, x, target_class)
    cam = grad_cam(model, x, target_class=target)
    cam_hw = cam_to_image_shape(cam, pixels.shape)
    return cam_hw, heatmap_overlay(pixels, cam_hw)


def _resolve(source: ClassifierArtifact | Predictor) -> tuple[ClassifierArtifact, nn.Module]:
    model = getattr(source, "model", None)
    artifact = getattr(source, "artifact", None)
    if isinstance(model, nn.Module) and artifact is not None:  # a Predictor
        return artifact, model
    if hasattr(source, "build_model"):  # a ClassifierArtifact
        return source, source.build_model()  # type: ignore[union-attr,return-value]
    raise TypeError(f"expected a ClassifierArtifact or a Predictor, got {type(source).__name__}")


def _target_index(artifact: ClassifierArtifact, model: nn.Module, x: torch.Tensor, target: int | str | None) -> int:
    names = list(artifact.class_names)
    if isinstance(target, str):
        if target not in names:
            raise ValueError(f"unknown class {target!r}; classes: {', '.join(names)}")
        return names.index(target)
    if target is not None:
        return int(target)
    if artifact.positive_class is not None and artifact.positive_class in names:
        return names.index(artifact.positive_class)
    device = next(model.parameters()).device
    with torch.no_grad():
        return int(model.eval()(x.to(device)).argmax(dim=1)[0])
