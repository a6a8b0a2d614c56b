"""The CUDA paths of training and serving: mixed precision, GradScaler, channels_last, device-resident data,
half-precision serving, Grad-CAM and the model cache on the GPU. They run wherever a CUDA GPU is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import ClassifierArtifact
from pipelines.infer import Predictor
from pipelines.preprocess import load_canonical
from pipelines.train import TrainData, train_classifier
from pipelines.training.loop import TrainingRun
from service.model_cache import ModelCache
from tests.pipelines.test_train import make_dataset, spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this host)")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainData:
    return make_dataset(tmp_path_factory.mktemp("xrays"), n_train=48, n_val=16, n_test=16)


@pytest.fixture(scope="module")
def artifact_path(data: TrainData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    return train_classifier(spec(epochs=3, device="cuda"), data, out).artifact_path


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_mixed_precision_training_learns_and_reports_gpu_memory(
    data: TrainData, tmp_path: Path, precision: str
) -> None:
    events: list[dict] = []
    result = train_classifier(
        spec(epochs=3, device="cuda", precision=precision), data, tmp_path, on_progress=events.append
    )
    assert result.val_metrics["auroc"] >= 0.9, result.val_metrics
    peaks = [e["gpu_peak_mem_mb"] for e in events if e["phase"] == "training" and e.get("val")]
    assert peaks and all(p > 0 for p in peaks)
    art = ClassifierArtifact.load(result.artifact_path)  # saved on the CPU, loadable anywhere
    assert all(t.device.type == "cpu" for t in art.state_dict.values())
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["metadata"]["device"].startswith("cuda")


def test_scaler_channels_last_and_device_resident_images(data: TrainData, tmp_path: Path) -> None:
    run = TrainingRun(
        spec(device="cuda", precision="fp16"),
        data,
        tmp_path,
        weights="none",
        on_progress=lambda e: None,
        should_stop=lambda: False,
    )
    run.build_data()
    run.build_model()
    run.build_loss()
    run.build_optimizer()
    assert run.train_set.images.device.type == "cuda" and run.train_set.labels.device.type == "cpu"
    assert run.scaler.is_enabled() and run.amp_dtype == torch.float16
    conv = next(p for p in run.model.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    loss = run.train_step(torch.arange(8), torch.Generator().manual_seed(0))
    assert loss.device.type == "cuda" and torch.isfinite(loss)


def test_half_precision_serving_matches_fp32_on_the_cpu(artifact_path: Path, data: TrainData) -> None:
    images = [load_canonical(p) for p, _ in data.test]
    gpu = Predictor.load(artifact_path, device="cuda")
    cpu = Predictor.load(artifact_path, device="cpu")
    assert gpu.dtype == torch.float16 and next(gpu.model.parameters()).dtype == torch.float16
    np.testing.assert_allclose(gpu.probabilities(images), cpu.probabilities(images), atol=2e-2)
    assert [p.label for p in gpu.predict(images)] == [p.label for p in cpu.predict(images)]


def test_grad_cam_runs_on_the_served_half_precision_model(artifact_path: Path, data: TrainData) -> None:
    from pipelines.explain import explain

    pixels = load_canonical(data.test[1][0])
    gpu = Predictor.load(artifact_path, device="cuda")
    result = explain(gpu, pixels)
    cam = result[0] if isinstance(result, tuple) else result.cam
    assert cam.shape == pixels.shape and np.isfinite(cam).all()


def test_model_cache_bounded_by_gpu_memory(artifact_path: Path, tmp_path: Path) -> None:
    second = tmp_path / "copy.pt"
    second.write_bytes(artifact_path.read_bytes())
    cache = ModelCache(max_models=4, max_bytes=2**40, device="cuda", max_gpu_bytes=1)
    first = cache.get("a", artifact_path)
    assert first.device.type == "cuda" and "a" in cache
    cache.get("b", second)
    assert len(cache) == 1 and "b" in cache  # the GPU budget, not the count, evicted "a"
