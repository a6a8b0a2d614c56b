"""Throughput of Hilum's training engine against a plain timm + PyTorch loop, on synthetic X-rays.

    python bench/train.py [--backbones resnet18,efficientnet_b0] [--image-size 224] [--images 256] [--epochs 2]

1. ``full`` strategy: Hilum's ``train_classifier`` vs the usual loop (Dataset that opens each PNG with
   Pillow every epoch, torchvision transforms, DataLoader workers). Both count decoding and training time;
   Hilum's validation, calibration and report phases are excluded.
2. ``frozen`` strategy, 10 epochs: backbone features cached once vs recomputed every step.
On CUDA both sides use AMP (bf16 when supported) and channels_last.
3. On a CUDA host, first a GPU report: resnet50 at 224 with AMP end to end (PNG decode included), the model
   FLOPs utilisation it implies against the card's bf16 peak, and batch production vs compute per step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train import TrainData, TrainSpec, train_classifier  # noqa: E402


def write_dataset(root: Path, n: int, seed: int = 0, prefix: str = "") -> list[tuple[Path, int]]:
    """Canonical-looking PNGs: 512 x 416 noise, a bright blob for the positive class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        y = (i + seed) % 2
        a = rng.integers(0, 90, (512, 416)).astype(np.uint8)
        if y:
            r, c = rng.integers(50, 300), rng.integers(50, 250)
            a[r : r + 120, c : c + 120] = 220
        path = root / f"img_{prefix}{i:05d}.png"
        Image.fromarray(a, mode="L").save(path)
        items.append((path, y))
    return items


def plain_loop(name: str, items: list[tuple[Path, int]], *, image_size: int, batch_size: int, epochs: int) -> float:
    """The usual way: PIL decode + torchvision transforms per sample per epoch, DataLoader workers. Returns img/s."""
    import timm
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tf = T.Compose(
        [
            T.Resize((image_size, image_size)),
            T.RandomAffine(degrees=10, scale=(0.9, 1.1), translate=(0.05, 0.05)),
            T.ColorJitter(brightness=0.1, contrast=0.1),
            T.ToTensor(),
            T.Normalize([0.449], [0.226]),
        ]
    )

    class PngDataset(Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            path, y = items[i]
            with Image.open(path) as im:
                return tf(im.convert("L")), y

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=2, in_chans=1).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    workers = min(4, os.cpu_count() or 1)
    loader = DataLoader(
        PngDataset(),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
    )
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    seen, t0 = 0, time.perf_counter()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def hilum_run(spec: TrainSpec, data: TrainData, out: Path) -> dict:
    t0 = time.perf_counter()
    train_classifier(spec, data, out)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report" / "report.json").read_text())
    epoch_s = sum(h["seconds"] for h in report["history"])
    setup_s = report["timings"].get("decode_s", 0.0) + report["timings"].get("feature_cache_s", 0.0)
    images = sum(h["throughput_img_s"] * h["seconds"] for h in report["history"])
    return {"wall_s": wall, "train_s": epoch_s + setup_s, "img_s": images / (epoch_s + setup_s)}


# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a substring of the device name.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
)


def peak_tflops(device_name: str) -> float | None:
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in device_name), None)


def train_flops_per_image(backbone: str, image_size: int) -> float:
    """FLOPs of one training step per image (forward + backward), counted by torch's FLOP counter."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(backbone, pretrained=False, num_classes=2, in_chans=1)
    x = torch.randn(2, 1, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


def loader_vs_compute(spec: TrainSpec, data: TrainData, out: Path, steps: int = 20) -> tuple[float, float]:
    """Milliseconds per step spent producing the batch (gather, copy, augment, normalise) vs the whole step."""
    from pipelines.training import data as D
    from pipelines.training.loop import TrainingRun

    run = TrainingRun(spec, data, out, weights="none", on_progress=lambda e: None, should_stop=lambda: False)
    run.build_data()
    run.build_model()
    run.build_loss()
    run.build_optimizer()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(run.train_set))
    idx = [order[(i * spec.batch_size) % len(order) :][: spec.batch_size] for i in range(steps)]
    for warm in idx[:3]:  # warm-up: CUDA's lazy kernel loading
        run.train_step(warm, g)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in idx:
        u8 = run.train_set.images[batch.to(run.train_set.images.device)].to(run.device, non_blocking=True)
        run.to_device(D.make_batch(u8, mean=run.mean, std=run.std, g=g))
    torch.cuda.synchronize()
    loader = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for batch in idx:
        run.train_step(batch, g)
    torch.cuda.synchronize()
    return loader * 1000, (time.perf_counter() - t0) / steps * 1000


def gpu_report(root: Path, *, backbone: str, image_size: int, images: int, batch_size: int, epochs: int) -> None:
    """resnet50-class training on the GPU end to end (PNG decode included): img/s, MFU, loader vs compute."""
    from concurrent.futures import ThreadPoolExecutor

    name = torch.cuda.get_device_name()
    print(f"\nGPU training report: {backbone} at {image_size} px, AMP, batch {batch_size}, {images} images, {name}")
    (root / "gpu").mkdir()
    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        chunks = list(pool.map(lambda i: write_dataset(root / "gpu", 1, seed=i, prefix=f"{i:06d}"), range(images + 64)))
    items = [it for chunk in chunks for it in chunk]
    data = TrainData(["NORMAL", "PNEUMONIA"], items[:images], items[images : images + 32], items[images + 32 :])
    spec = TrainSpec(
        backbone=backbone,
        strategy="full",
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        bootstrap_resamples=0,
        warmup_epochs=0,
        device="cuda",
    )
    out = root / "gpu-run"
    hilum_run(spec, data, out)
    report = json.loads((out / "report" / "report.json").read_text())
    decode_s = report["timings"].get("decode_s", 0.0)
    epoch_s = [h["seconds"] for h in report["history"]]
    e2e = images * epochs / (decode_s + sum(epoch_s))
    steady = images / min(epoch_s)
    flops = train_flops_per_image(backbone, image_size)
    peak = peak_tflops(name)
    print(f"  decode {decode_s:.1f} s; epochs {', '.join(f'{s:.1f}' for s in epoch_s)} s")
    print(f"  end to end (decode + every epoch): {e2e:.0f} img/s; best epoch: {steady:.0f} img/s")
    print(f"  {flops / 1e9:.1f} GFLOP per training image (forward + backward)")
    if peak:
        mfu = {k: 100 * v * flops / (peak * 1e12) for k, v in (("e2e", e2e), ("best", steady))}
        print(
            f"  model FLOPs utilisation vs {peak:.0f} TFLOP/s bf16 peak: "
            f"end to end {mfu['e2e']:.1f}%, best epoch {mfu['best']:.1f}%"
        )
    else:
        print("  model FLOPs utilisation: unknown peak for this device")
    loader_ms, step_ms = loader_vs_compute(spec, data, root / "gpu-loader")
    print(
        f"  per step: batch production {loader_ms:.2f} ms of {step_ms:.2f} ms "
        f"({100 * loader_ms / step_ms:.1f}%; the batch is gathered and augmented on the GPU from device memory)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="resnet18")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--frozen-epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats of the full comparison (best of N)")
    ap.add_argument("--gpu-backbone", default="resnet50", help="GPU report: backbone (on a CUDA host only)")
    ap.add_argument("--gpu-images", type=int, default=4096, help="GPU report: training images")
    ap.add_argument("--gpu-batch-size", type=int, default=256)
    ap.add_argument("--gpu-epochs", type=int, default=3)
    ap.add_argument("--skip-comparison", action="store_true", help="only the GPU report")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {device}; {args.images} images at {args.image_size} px, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "png").mkdir()
        items = write_dataset(root / "png", args.images + 32)
        data = TrainData(["NORMAL", "PNEUMONIA"], items[: args.images], items[args.images : -16], items[-16:])
        if torch.cuda.is_available():
            gpu_report(
                root,
                backbone=args.gpu_backbone,
                image_size=224,
                images=args.gpu_images,
                batch_size=args.gpu_batch_size,
                epochs=args.gpu_epochs,
            )
        for name in [] if args.skip_comparison else args.backbones.split(","):
            common = dict(
                backbone=name,
                image_size=args.image_size,
                batch_size=args.batch_size,
                bootstrap_resamples=0,
                warmup_epochs=0,
            )
            spec = TrainSpec(strategy="full", epochs=args.epochs, **common)  # type: ignore[arg-type]
            hilum, plain = 0.0, 0.0
            for r in range(args.repeats):  # interleaved, best of N: this machine may be shared
                hilum = max(hilum, hilum_run(spec, data, root / f"{name}-full-{r}")["img_s"])
                plain = max(
                    plain,
                    plain_loop(
                        name, data.train, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs
                    ),
                )
            print(
                f"{name} full x{args.epochs} epochs: hilum {hilum:.1f} img/s, plain timm loop {plain:.1f} img/s, "
                f"ratio hilum/plain {hilum / plain:.2f}"
            )
            frozen = {}
            for cache in (True, False):
                s = TrainSpec(
                    strategy="frozen", epochs=args.frozen_epochs, augment="none", cache_features=cache, **common
                )  # type: ignore[arg-type]
                frozen[cache] = hilum_run(s, data, root / f"{name}-frozen-{cache}")
            cached, uncached = frozen[True], frozen[False]
            print(
                f"{name} frozen x{args.frozen_epochs} epochs: feature cache {cached['train_s']:.1f} s, "
                f"no cache {uncached['train_s']:.1f} s, speed-up {uncached['train_s'] / cached['train_s']:.1f}x "
                f"(whole job incl. eval/report: {cached['wall_s']:.1f} s vs {uncached['wall_s']:.1f} s)"
            )


if __name__ == "__main__":
    main()
