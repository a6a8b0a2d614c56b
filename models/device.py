"""Where a model runs and in which precision: one rule for serving, heatmaps and training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this host."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU; ``cuda``/``cuda:N``/``cpu`` as given.

    Asking for CUDA on a host without it raises ``DeviceUnavailable`` naming the fix, instead of failing
    later inside the first forward pass.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceUnavailable(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise DeviceUnavailable(
                f"device {name!r} asked for, but this host has {count} CUDA device(s); "
                "set HILUM_SERVING_DEVICE=auto or cpu"
            )
        device = torch.device("cuda", index)  # always indexed, so logs and cache keys name the card
    elif device.type != "cpu":
        raise DeviceUnavailable(f"device type {device.type!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the served network computes in.

    ``auto`` is fp16 on CUDA (10 mantissa bits keep calibrated probabilities within about 1e-3 of fp32 for
    the CNNs we serve, and Hopper/Ampere tensor cores run it at the bf16 rate) and fp32 on the CPU, where
    half precision is slower, not faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = _DTYPES[precision]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("fp16 is not supported for serving on the CPU; use fp32 or bf16")
    return dtype


@dataclass(frozen=True)
class DeviceInfo:
    """What a start-up line and the model cache need to know about a device."""

    device: torch.device
    dtype: torch.dtype
    name: str
    total_bytes: int | None  # GPU memory; None on the CPU

    def describe(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        memory = f", {self.total_bytes / 2**30:.0f} GiB" if self.total_bytes else ""
        return f"{self.device} ({self.name}{memory}), {dtype}"


def device_info(device: torch.device, dtype: torch.dtype) -> DeviceInfo:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceInfo(device, dtype, props.name, int(props.total_memory))
    return DeviceInfo(device, dtype, f"CPU, {torch.get_num_threads()} threads", None)


def default_batch_size(device: torch.device) -> int:
    """Largest micro-batch worth waiting for: a GPU's forward pass costs about the same from 1 to 64 images."""
    return 64 if device.type == "cuda" else 16
