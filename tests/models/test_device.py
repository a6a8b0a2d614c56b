"""The serving device and precision rule, tested on every host (CUDA or not)."""

from __future__ import annotations

import pytest
import torch

from models.device import (
    DeviceUnavailable,
    default_batch_size,
    device_info,
    resolve_device,
    resolve_precision,
)

HAS_CUDA = torch.cuda.is_available()
REDIS = "redis://127.0.0.1:6379/13"  # only named: building the app connects to nothing


def test_auto_picks_cuda_exactly_when_present() -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("").type == resolve_device("auto").type
    assert resolve_device("CPU") == torch.device("cpu")


def test_cuda_on_a_host_without_enough_gpus_is_refused_with_the_fix() -> None:
    beyond = torch.cuda.device_count() if HAS_CUDA else 0
    with pytest.raises(DeviceUnavailable, match="HILUM_SERVING_DEVICE=auto"):
        resolve_device(f"cuda:{beyond}")
    if not HAS_CUDA:
        with pytest.raises(DeviceUnavailable, match="0 CUDA device"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["tpu", "mps:0x", "gpu"])
def test_unknown_devices_are_refused(name: str) -> None:
    with pytest.raises(DeviceUnavailable):
        resolve_device(name)


def test_precision_rule() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision(cpu, "auto") == torch.float32
    assert resolve_precision(cuda, "auto") == torch.float16
    assert resolve_precision(cuda, "bf16") == torch.bfloat16
    assert resolve_precision(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 is not supported .* CPU"):
        resolve_precision(cpu, "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision(cpu, "int8")


def test_batch_size_and_description_follow_the_device() -> None:
    assert default_batch_size(torch.device("cpu")) == 16
    assert default_batch_size(torch.device("cuda")) == 64
    info = device_info(torch.device("cpu"), torch.float32)
    assert info.total_bytes is None and info.describe().startswith("cpu (CPU, ") and "float32" in info.describe()


def test_app_serves_where_settings_say(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hilum.settings import Settings
    from service.app import create_app

    app = create_app(Settings(data_dir=tmp_path, redis_url=REDIS, serving_device="cpu", micro_batching=True))
    assert app.state.model_cache.device == "cpu" and app.state.batcher.max_batch == 16
    app = create_app(Settings(data_dir=tmp_path, redis_url=REDIS, serving_device="auto", batch_max_size=5))
    assert app.state.model_cache.device == ("cuda:0" if HAS_CUDA else "cpu") and app.state.batcher.max_batch == 5
    if not HAS_CUDA:
        with pytest.raises(DeviceUnavailable):
            create_app(Settings(data_dir=tmp_path, redis_url=REDIS, serving_device="cuda"))
