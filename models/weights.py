"""Where a backbone's starting weights come from: none, timm's hub (ImageNet), or a registered local file."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch

_logger = logging.getLogger(__name__)

HUB_CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LocalWeights:
    """A .safetensors or .pth state dict of the ImageNet (3-channel, 1000-class) model."""

    path: Path


WeightsSource = Literal["none", "imagenet"] | LocalWeights


class WeightsUnavailable(RuntimeError):
    """The requested pretrained weights cannot be obtained on this host."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or .pth (``weights_only=True``), unwrapping common checkpoint keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            return dict(safetensors.torch.load_file(str(path), device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path.name} is not a readable safetensors file: {e}") from e
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path.name} is not a state dict loadable with torch.load(weights_only=True): {e}") from e
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path.name} does not hold a state dict (a mapping of parameter names to tensors)")
    # DataParallel / DDP checkpoints prefix every key with 'module.'
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_weights_file(path: Path, backbone: str) -> dict:
    """Check that ``path`` is an ImageNet state dict for ``backbone`` (strict except the classifier).

    Returns ``{"backbone", "format", "tensors", "sha256"}``; raises ``ValueError`` naming the problem.
    """
    import timm

    from models.catalog import check_backbone_name

    check_backbone_name(backbone)
    path = Path(path)
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise ValueError(f"unsupported weights format {path.suffix!r}; use .safetensors or .pth")
    state = read_state_dict(path)
    model = timm.create_model(backbone, pretrained=False)
    reference = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "")
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)

    def is_head(key: str) -> bool:
        return any(key == c or key.startswith(c + ".") for c in classifiers if c)

    missing = sorted(k for k in reference if k not in state and not is_head(k))
    unexpected = sorted(k for k in state if k not in reference and not is_head(k))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in reference.items()
        if k in state and not is_head(k) and tuple(state[k].shape) != tuple(v.shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
    if problems:
        raise ValueError(f"{path.name} does not fit backbone {backbone!r}: " + "; ".join(problems))
    return {
        "backbone": backbone,
        "format": "safetensors" if path.suffix == ".safetensors" else "pth",
        "tensors": len(state),
        "sha256": _sha256(path),
    }


def _hub_cached(hf_hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(hf_hub_id, filename)
        if isinstance(hit, str):
            return True
    return False


def _hub_reachable(timeout_s: float = HUB_CHECK_TIMEOUT_S) -> bool:
    """A TCP connect to the hub endpoint, in a thread so a hanging DNS lookup cannot block us."""
    import socket

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    parsed = urlparse(constants.ENDPOINT)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    return bool(result and result[0])


def ensure_imagenet_available(backbone: str) -> None:
    """Fail fast (seconds, not a hung download) when ImageNet weights are neither cached nor downloadable."""
    import timm

    cfg = timm.get_pretrained_cfg(backbone)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailable(f"timm has no ImageNet weights for {backbone}; register a local weights file instead")
    if _hub_cached(hub_id):
        return
    if not _hub_reachable():
        raise WeightsUnavailable(
            f"ImageNet weights for {backbone} could not be downloaded from the Hugging Face hub (host offline?); "
            "register a local weights file instead"
        )
