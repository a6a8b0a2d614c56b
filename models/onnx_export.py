"""Export a classifier artifact to ONNX: calibrated probabilities out, the artifact's metadata inside.

The exported graph is ``softmax(model(image) / temperature)``, so an ONNX runtime gives the same
calibrated probabilities as ``Predictor``; preprocessing (``pipelines.model_input.model_input``) stays
outside the graph and its parameters travel in ``metadata_props`` (JSON values):
``class_names``, ``threshold``, ``positive_class``, ``image_size``, ``mean``, ``std``, ``preprocessing``
(the artifact's whole input path: maximum side, interpolation, padding, chest-film check), ``backbone``,
``temperature`` (already folded in; for the record), ``operating_point`` and ``format``. The parity check
against PyTorch lives with the input path (``pipelines.model_input.check_onnx_parity``): models never
import pipelines.

Uses the TorchScript-based exporter (``dynamo=False``): the torch.export-based one, the default
since torch 2.9, needs the ``onnxscript`` package.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.artifact import ClassifierArtifact

_logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
ONNX_FORMAT = "hilum.classifier.onnx/1"
PARITY_TOLERANCE = 1e-4  # max |p_onnx - p_torch| an export must meet


class CalibratedClassifier(nn.Module):
    """``softmax(model(image) / temperature)``: the network with its calibration folded in."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.register_buffer("inv_temperature", torch.tensor(1.0 / float(temperature), dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(image).float() * self.inv_temperature, dim=1)


def onnx_metadata(artifact: ClassifierArtifact) -> dict[str, str]:
    """The ``metadata_props`` written into an export: JSON-encoded values."""
    values: dict[str, Any] = {
        "format": ONNX_FORMAT,
        "class_names": list(artifact.class_names),
        "threshold": artifact.threshold,
        "positive_class": artifact.positive_class,
        "image_size": int(artifact.image_size),
        "mean": float(artifact.mean),
        "std": float(artifact.std),
        "backbone": artifact.backbone,
        "temperature": float(artifact.temperature),
        "operating_point": artifact.operating_point,
        "preprocessing": getattr(artifact, "preprocessing", None)
        or {"image_size": int(artifact.image_size), "mean": float(artifact.mean), "std": float(artifact.std)},
    }
    return {k: json.dumps(v) for k, v in values.items()}


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The decoded ``metadata_props`` of an ONNX file (values that are not JSON are returned as strings)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def export_onnx(artifact: ClassifierArtifact, path: Path, *, opset: int = 17) -> Path:
    """Write ``artifact`` as ONNX to ``path`` (atomically) and return it.

    Input ``image``: float32 (N, 1, S, S), already normalised by ``pipelines.model_input.model_input``,
    N dynamic.
    Output ``probabilities``: float32 (N, num_classes), temperature-scaled softmax.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    in_chans = int(artifact.model_args.get("in_chans", 1))
    wrapped = CalibratedClassifier(artifact.build_model().cpu().eval(), artifact.temperature).eval()
    # Batch 2, not 1: tracing with a batch of 1 invites shape specialisation on the batch axis.
    dummy = torch.zeros(2, in_chans, artifact.image_size, artifact.image_size, dtype=torch.float32)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in onnx_metadata(artifact).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"Hilum {artifact.backbone} classifier: {', '.join(artifact.class_names)}"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    _logger.info("exported %s (%s, opset %d) to %s", artifact.backbone, artifact.class_names, opset, path)
    return path
