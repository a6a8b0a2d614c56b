"""Throughput of Hilum's training engine against a plain timm + PyTorch loop, on synthetic X-rays.

    python bench/train.py [--backbones resnet18,efficientnet_b0] [--image-size 224] [--images 256] [--epochs 2]

1. ``full`` strategy: Hilum's ``train_classifier`` vs the usual loop (Dataset that opens each PNG with
   Pillow every epoch, torchvision transforms, DataLoader workers). Both count decoding and training time;
   Hilum's validation, calibration and report phases are excluded.
2. ``frozen`` strategy, 10 epochs: backbone features cached once vs recomputed every step.
On CUDA both sides use AMP (bf16 when supported) and channels_last.
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


def write_dataset(root: Path, n: int, seed: int = 0) -> list[tuple[Path, int]]:
    """Canonical-looking PNGs: 512 x 416 noise, a bright blob for the positive class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        y = i % 2
        a = rng.integers(0, 90, (512, 416)).astype(np.uint8)
        if y:
            r, c = rng.integers(50, 300), rng.integers(50, 250)
            a[r : r + 120, c : c + 120] = 220
        path = root / f"img_{i:05d}.png"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="resnet18")
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--frozen-epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats of the full comparison (best of N)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {device}; {args.images} images at {args.image_size} px, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "png").mkdir()
        items = write_dataset(root / "png", args.images + 32)
        data = TrainData(["NORMAL", "PNEUMONIA"], items[: args.images], items[args.images : -16], items[-16:])
        for name in args.backbones.split(","):
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
                    strategy="frozen", epochs=args.frozen_epochs, augment=False, cache_features=cache, **common
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
