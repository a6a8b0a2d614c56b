"""The one path from an uploaded file to model input: decode, chest-film check, canonical image, tensor.

Ingestion (decode and check only: it has no model yet), prediction, heatmaps, the ONNX parity check and
the benches all come through here. Every parameter comes from the artifact's ``preprocessing`` dict, so
serving never reads today's settings for the maximum side, image size, mean or std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipelines.imaging import DecodedImage, ImageRejected, chest_xray_problem, decode_image
from pipelines.preprocess import to_model_input

if TYPE_CHECKING:
    from models.artifact import ClassifierArtifact

# What artifacts made before preprocessing travelled with them were trained with.
LEGACY_MAX_SIDE = 512
INTERPOLATION = "bilinear-antialias"
PAD = "centre-square"


@dataclass(frozen=True)
class PreparedInput:
    """One upload, ready for the model: the decoded file, its canonical pixels and the model input.

    ``tensor`` is computed on first use: a predictor fed with ``pixels`` in batches does not need it.
    """

    decoded: DecodedImage
    preprocessing: Mapping[str, Any]

    @property
    def pixels(self) -> np.ndarray:
        """uint8 H x W, bone bright, longer side at most ``preprocessing["max_side"]``."""
        return self.decoded.pixels

    @cached_property
    def tensor(self) -> torch.Tensor:
        """float32 (1, S, S), normalised: exactly what the model sees."""
        return model_input(self.decoded.pixels, self.preprocessing)


def preprocessing_of(artifact: ClassifierArtifact) -> dict[str, Any]:
    """The artifact's preprocessing; for an artifact older than the field, what it was trained with."""
    stored = getattr(artifact, "preprocessing", None) or {}
    return {
        "max_side": LEGACY_MAX_SIDE,
        "image_size": int(artifact.image_size),
        "mean": float(artifact.mean),
        "std": float(artifact.std),
        "interpolation": INTERPOLATION,
        "pad": PAD,
        "chest_check": True,
        **stored,
    }


def decode_checked(data: bytes, *, max_side: int, chest_check: bool = True) -> DecodedImage:
    """Decode PNG/JPEG/DICOM bytes to the canonical array; ImageRejected (plain reason) for unusable files,
    including a DICOM whose header says it is not a chest X-ray."""
    decoded = decode_image(data, max_side=max_side)
    if chest_check:
        problem = chest_xray_problem(decoded.dicom)
        if problem:
            raise ImageRejected(problem)
    return decoded


def model_input(pixels: np.ndarray, preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """Canonical uint8 H x W -> float32 (1, S, S) model input, by the artifact's own parameters."""
    _check_supported(preprocessing)
    return to_model_input(
        pixels,
        image_size=int(preprocessing["image_size"]),
        mean=float(preprocessing["mean"]),
        std=float(preprocessing["std"]),
    )


def prepare(data: bytes, preprocessing: Mapping[str, Any]) -> PreparedInput:
    """Upload bytes -> PreparedInput; raises ImageRejected with a plain reason for an unusable file."""
    decoded = decode_checked(
        data, max_side=int(preprocessing["max_side"]), chest_check=bool(preprocessing.get("chest_check", True))
    )
    _check_supported(preprocessing)
    return PreparedInput(decoded=decoded, preprocessing=dict(preprocessing))


def _check_supported(preprocessing: Mapping[str, Any]) -> None:
    interpolation = preprocessing.get("interpolation", INTERPOLATION)
    pad = preprocessing.get("pad", PAD)
    if interpolation != INTERPOLATION or pad != PAD:
        raise ValueError(f"unsupported preprocessing (interpolation {interpolation!r}, pad {pad!r})")


def check_onnx_parity(
    artifact: ClassifierArtifact, onnx_path: Path, images: Sequence[np.ndarray], *, predictor: Any = None
) -> float:
    """Max |ONNX - PyTorch| over the calibrated probabilities of ``images`` (canonical uint8 H x W).

    Both sides see the same ``model_input`` tensors; the PyTorch side is ``Predictor.probabilities``
    (``predictor`` reuses a loaded one). An export is good when this is <= ``PARITY_TOLERANCE``.
    """
    import onnxruntime as ort

    from models.onnx_export import INPUT_NAME, OUTPUT_NAME
    from pipelines.infer import Predictor

    if not images:
        raise ValueError("check_onnx_parity needs at least one image")
    preprocessing = preprocessing_of(artifact)
    x = np.stack([model_input(im, preprocessing).numpy() for im in images])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_probs,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})
    torch_probs = (predictor or Predictor(artifact)).probabilities(list(images))
    if onnx_probs.shape != torch_probs.shape:
        raise ValueError(f"ONNX gives {onnx_probs.shape}, PyTorch {torch_probs.shape}")
    return float(np.abs(onnx_probs.astype(np.float64) - torch_probs.astype(np.float64)).max())
