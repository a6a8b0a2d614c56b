"""Grad-CAM heatmaps for any timm CNN classifier, on a scale comparable across films.

Generic by construction: the explained layer is the last feature map, ``model.forward_features(x)``,
and the scores come from ``model.forward_head(features)``; no per-architecture layer names. The
backbone runs without autograd, then only the feature map requires a gradient, so the head's
backward pass is all that is computed and no parameter's ``.grad`` is touched.

Why our own Grad-CAM rather than a library: pytorch-grad-cam min-max normalises every map
(``scale_cam_image``), so each film's strongest pixel is bright whatever the evidence: the very fault a
clinician saw (a normal film glowing red). It also needs a per-architecture target layer. captum's
``LayerGradCam`` computes the same raw quantity as ``grad_cam_raw`` below (ReLU of the gradient-pooled
channel sum) but would add a dependency for ten lines of identical algebra and still need a layer handle.

The scale: the raw map is in logit units per location. At training time ``cam_reference`` records, per
class, the 95th percentile of the peak raw map over the validation films of that class; a served map is
``raw / reference`` clipped to [0, 1], so 1.0 means "as strong as the strongest validation evidence for this
class" and a normal film explaining PNEUMONIA stays near 0. An artifact without a reference falls back on
the per-film map scaled by the class probability (still: no probability, no heat).

Do not call these functions inside ``torch.inference_mode()``: autograd is disabled there for good
(tensors made in it can never take part in a backward pass), so ``grad_cam`` raises ``RuntimeError``.
``torch.no_grad()`` callers are fine: gradients are enabled locally.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.model_input import model_input, preprocessing_of

if TYPE_CHECKING:
    from models.artifact import ClassifierArtifact
    from pipelines.infer import Predictor

_logger = logging.getLogger(__name__)

# How strongly the colour map covers the X-ray where the cam is 1 (0 where it is 0).
OVERLAY_ALPHA = 0.5
COLORMAP = "jet"
REFERENCE_QUANTILE = 0.95


@dataclass(frozen=True)
class Explanation:
    """A heatmap for one film: ``cam`` float32 at the film's H x W in [0, 1] on ``scale``; ``png`` the overlay
    at the film's size; ``legend_png`` the colour bar with its meaning."""

    cam: np.ndarray
    class_name: str
    class_index: int
    probability: float
    png: bytes
    legend_png: bytes
    scale: dict = field(default_factory=dict)


def grad_cam_raw(model: nn.Module, x: torch.Tensor, *, target_class: int) -> torch.Tensor:
    """Raw Grad-CAM (>= 0, logit units) of ``target_class``'s margin for a batch ``x`` (N, C, S, S): (N, S, S).

    The model is switched to (and left in) eval mode, so BatchNorm and dropout behave as at inference; each
    film's logit depends on its own features only, so one backward pass serves the whole batch.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("grad_cam needs autograd: call it outside torch.inference_mode()")
    if x.ndim != 4:
        raise ValueError(f"expected inputs of shape (N, C, S, S), got {tuple(x.shape)}")
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    # clone(): an inference tensor made by a caller's earlier inference_mode block becomes a normal one.
    dtype = param.dtype if param is not None else x.dtype  # a half-precision served model takes half inputs
    x = x.detach().clone().to(device=device, dtype=dtype)
    with torch.no_grad():
        features = model.forward_features(x)  # type: ignore[operator]
    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(features)  # type: ignore[operator]
        num_classes = logits.shape[-1]
        if not 0 <= target_class < num_classes:
            raise ValueError(f"target_class {target_class} out of range for {num_classes} classes")
        # Explain the class's margin over the others (its logit minus their mean), not its raw logit: with a
        # softmax only differences matter, and a raw logit can be negative everywhere for a class the model
        # does predict (a shared offset), which would show no evidence at all.
        others = torch.cat([logits[:, :target_class], logits[:, target_class + 1 :]], dim=1)
        margin = logits[:, target_class] - (others.mean(dim=1) if others.shape[1] else 0.0)
        (grads,) = torch.autograd.grad(margin.sum(), features)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)  # one weight per channel: pooled gradient
        cam = F.relu((weights * features).sum(dim=1, keepdim=True)).float()
        cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False).clamp_(min=0.0)
    return cam[:, 0].cpu()


def grad_cam(model: nn.Module, x: torch.Tensor, *, target_class: int) -> np.ndarray:
    """Grad-CAM of one input ``x`` (1, C, S, S) stretched to [0, 1] for this film alone: float32 (S, S).

    Per-film stretching is NOT comparable across films; ``explain`` uses the artifact's reference instead.
    A cam with no positive evidence anywhere is all zeros.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one input of shape (1, C, S, S), got {tuple(x.shape)}")
    return _unit_range(grad_cam_raw(model, x, target_class=target_class)[0]).numpy().astype(np.float32)


def _unit_range(cam: torch.Tensor) -> torch.Tensor:
    lo, hi = cam.min(), cam.max()
    if not torch.isfinite(hi) or hi - lo <= 1e-12:
        return torch.zeros_like(cam)
    return ((cam - lo) / (hi - lo)).clamp_(0.0, 1.0)


def cam_reference(
    model: nn.Module, x: torch.Tensor, labels: Sequence[int] | torch.Tensor, class_names: Sequence[str]
) -> dict:
    """The artifact's ``explanation`` dict from validation inputs ``x`` (N, 1, S, S) and their labels.

    Per class: the ``REFERENCE_QUANTILE`` quantile of the films' peak raw Grad-CAM of their own class.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    reference: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for c, name in enumerate(class_names):
        idx = torch.nonzero(labels == c).flatten()
        counts[name] = int(idx.numel())
        peaks = [
            grad_cam_raw(model, x[idx[i : i + 64]], target_class=c).flatten(1).max(dim=1).values
            for i in range(0, idx.numel(), 64)
        ]
        value = float(torch.quantile(torch.cat(peaks), REFERENCE_QUANTILE)) if peaks else 0.0
        reference[name] = value if value > 1e-8 else None
    return {"method": "grad-cam", "reference": reference, "quantile": REFERENCE_QUANTILE, "n": counts}


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
    """PNG (RGB, the original image's H x W) of the X-ray with ``cam`` as a colour-map overlay.

    The overlay's opacity follows the cam, so where the cam is 0 the film shows through unchanged.
    """
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


@functools.lru_cache(maxsize=64)
def legend_png(class_name: str, meaning: str) -> bytes:
    """A colour bar (0 to 1 in ``COLORMAP``) titled with the class the map explains and what 1 means (cached)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 1.3))
    ax.imshow(np.linspace(0, 1, 256)[None, :], aspect="auto", cmap=COLORMAP, extent=(0, 1, 0, 1))
    ax.set_yticks([])
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_title(f"evidence for {class_name}", fontsize=9)
    ax.set_xlabel(meaning, fontsize=6)
    fig.subplots_adjust(left=0.04, right=0.96, top=0.78, bottom=0.45)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # headless: never try to open a display
    import matplotlib.pyplot as plt

    return plt


def explain(
    source: ClassifierArtifact | Predictor,
    pixels: np.ndarray,
    target_class: int | str | None = None,
    *,
    threshold: float | None = None,
) -> Explanation:
    """Grad-CAM for one canonical uint8 HxW image, at that image's H x W, on the artifact's scale.

    ``source`` is a loaded ``Predictor`` (its model is reused) or a ``ClassifierArtifact`` (a model is
    built for this call). ``target_class`` is a class index or name; ``None`` explains the predicted class
    (the positive class at or above ``threshold``, default the artifact's, for a binary model; else the top one).
    """
    artifact, model = _resolve(source)
    x = model_input(pixels, preprocessing_of(artifact))[None]
    probs = _probabilities(artifact, model, x)
    target = _target_index(artifact, probs, target_class, threshold)
    name = artifact.class_names[target]
    raw = grad_cam_raw(model, x, target_class=target)[0]
    reference = ((getattr(artifact, "explanation", None) or {}).get("reference") or {}).get(name)
    if reference:
        cam = (raw / float(reference)).clamp_(0.0, 1.0)
        meaning = (
            f"1 = as strong as the strongest {100 - round(REFERENCE_QUANTILE * 100)}% of validation evidence "
            f"for {name}; comparable across films"
        )
        kind = "validation-reference"
    else:
        cam = _unit_range(raw) * float(probs[target])
        meaning = f"peak = the model's probability of {name}; comparable across films (no validation reference)"
        kind = "probability-weighted"
    cam_hw = cam_to_image_shape(cam.numpy().astype(np.float32), pixels.shape)
    scale = {"min": 0.0, "max": 1.0, "colormap": COLORMAP, "meaning": meaning, "kind": kind}
    return Explanation(
        cam=cam_hw,
        class_name=name,
        class_index=target,
        probability=float(probs[target]),
        png=heatmap_overlay(pixels, cam_hw),
        legend_png=legend_png(name, meaning),
        scale=scale,
    )


def _resolve(source: ClassifierArtifact | Predictor) -> tuple[ClassifierArtifact, nn.Module]:
    model = getattr(source, "model", None)
    artifact = getattr(source, "artifact", None)
    if isinstance(model, nn.Module) and artifact is not None:  # a Predictor
        return artifact, model
    if hasattr(source, "build_model"):  # a ClassifierArtifact
        return source, source.build_model()  # type: ignore[union-attr,return-value]
    raise TypeError(f"expected a ClassifierArtifact or a Predictor, got {type(source).__name__}")


def _probabilities(artifact: ClassifierArtifact, model: nn.Module, x: torch.Tensor) -> np.ndarray:
    param = next(model.parameters())
    with torch.no_grad():
        logits = model.eval()(x.to(device=param.device, dtype=param.dtype)).float()
    return torch.softmax(logits / float(artifact.temperature), dim=1)[0].cpu().numpy()


def _target_index(
    artifact: ClassifierArtifact, probs: np.ndarray, target: int | str | None, threshold: float | None
) -> int:
    names = list(artifact.class_names)
    if isinstance(target, str):
        if target not in names:
            raise ValueError(f"unknown class {target!r}; classes: {', '.join(names)}")
        return names.index(target)
    if target is not None:
        return int(target)
    threshold = artifact.threshold if threshold is None else threshold
    positive = artifact.positive_class
    if positive in names and threshold is not None and len(names) == 2:
        pos = names.index(positive)  # type: ignore[arg-type]
        return pos if probs[pos] >= threshold else 1 - pos
    return int(np.argmax(probs))
