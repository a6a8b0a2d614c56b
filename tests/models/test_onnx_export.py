"""ONNX export: calibrated probabilities that match PyTorch, a dynamic batch axis, and the artifact's metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch

from models.artifact import ClassifierArtifact
from models.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    export_onnx,
    read_onnx_metadata,
)
from pipelines.model_input import check_onnx_parity
from pipelines.preprocess import to_model_input

SIZE = 64
BACKBONES = ["test_resnet", "test_efficientnet"]


def make_artifact(name: str) -> ClassifierArtifact:
    """A random-init network with non-trivial BatchNorm statistics and temperature, as training leaves it."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=2)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1, generator=gen)  # type: ignore[union-attr]
            m.running_var.uniform_(0.5, 1.5, generator=gen)  # type: ignore[union-attr]
    return ClassifierArtifact(
        state_dict=model.state_dict(),
        backbone=name,
        model_args={"backbone": name, "num_classes": 2, "in_chans": 1},
        class_names=["NORMAL", "PNEUMONIA"],
        image_size=SIZE,
        mean=0.45,
        std=0.226,
        temperature=1.7,
        positive_class="PNEUMONIA",
        threshold=0.37,
        operating_point={"sensitivity": 0.95, "specificity": 0.8},
    )


def images(n: int, seed: int) -> list[np.ndarray]:
    """Varied shapes, so preprocessing pads and resizes."""
    rng = np.random.default_rng(seed)
    shapes = [(80, 80), (90, 120), (130, 70), (64, 64)]
    return [rng.integers(0, 256, size=shapes[i % len(shapes)], dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module", params=BACKBONES)
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ClassifierArtifact, Path]:
    artifact = make_artifact(request.param)
    path = export_onnx(artifact, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    return artifact, path


@pytest.mark.parametrize("batch", [1, 3])
def test_parity_with_pytorch(exported: tuple[ClassifierArtifact, Path], batch: int) -> None:
    artifact, path = exported
    diff = check_onnx_parity(artifact, path, images(batch, seed=batch))
    assert diff <= PARITY_TOLERANCE, f"ONNX and PyTorch differ by {diff:.2e}"


def test_graph_io_dynamic_batch_and_calibrated_softmax(exported: tuple[ClassifierArtifact, Path]) -> None:
    artifact, path = exported
    graph = onnx.load(str(path)).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch axis must be dynamic"
    assert [d.dim_value for d in dims[1:]] == [1, SIZE, SIZE]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ims = images(5, seed=7)
    x = np.stack([to_model_input(im, image_size=SIZE, mean=artifact.mean, std=artifact.std).numpy() for im in ims])
    (probs,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The temperature is folded in: the graph's output is softmax(logits / T), not softmax(logits).
    with torch.no_grad():
        logits = artifact.build_model()(torch.from_numpy(x))
    np.testing.assert_allclose(probs, torch.softmax(logits / artifact.temperature, 1).numpy(), atol=1e-5)
    assert np.abs(probs - torch.softmax(logits, 1).numpy()).max() > 1e-3


def test_metadata_props(exported: tuple[ClassifierArtifact, Path]) -> None:
    artifact, path = exported
    meta = read_onnx_metadata(path)
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert meta["threshold"] == pytest.approx(0.37)
    assert meta["positive_class"] == "PNEUMONIA"
    assert meta["image_size"] == SIZE
    assert meta["mean"] == pytest.approx(0.45) and meta["std"] == pytest.approx(0.226)
    assert meta["backbone"] == artifact.backbone
    assert meta["temperature"] == pytest.approx(1.7)
    assert meta["operating_point"] == {"sensitivity": 0.95, "specificity": 0.8}
    assert meta["preprocessing"]["image_size"] == SIZE  # the input path travels with the export


def test_export_without_threshold_and_other_opset(tmp_path: Path) -> None:
    artifact = make_artifact("test_resnet")
    artifact = ClassifierArtifact(**{**artifact.__dict__, "threshold": None, "positive_class": None})
    path = export_onnx(artifact, tmp_path / "sub" / "m.onnx", opset=18)
    assert path.is_file() and not (tmp_path / "sub" / "m.onnx.tmp").exists()
    assert onnx.load(str(path)).opset_import[0].version == 18
    meta = read_onnx_metadata(path)
    assert meta["threshold"] is None and meta["positive_class"] is None
    assert check_onnx_parity(artifact, path, images(2, seed=3)) <= PARITY_TOLERANCE
    with pytest.raises(ValueError, match="at least one"):
        check_onnx_parity(artifact, path, [])
