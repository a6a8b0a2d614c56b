"""Ingestion benchmark: images per second per format, and peak memory on a large upload.

    python bench/ingest.py                 # 200 images at 512 px per format, then 0.25 GB and 2 GB uploads
    python bench/ingest.py --size-gb 4     # a bigger large upload
    python bench/ingest.py --skip-large    # throughput only

Each ingestion runs in a fresh child process that reports its own peak RSS, so the
figures are not polluted by the generator. The large uploads are stored (uncompressed)
zips of 2048x2048 16-bit DICOM files made from one synthetic X-ray with a per-file
counter patched into the pixel data: every file is distinct (no duplicate collapsing)
and generation costs little more than writing the bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.ingest import IngestConfig, ingest_archive  # noqa: E402
from pipelines.synthetic import dicom_bytes, render_cxr  # noqa: E402

FORMATS = [("png", None), ("dicom", "explicit"), ("dicom", "rle"), ("dicom", "jpeg2000"), ("dicom", "jpeg")]


def peak_rss_kb() -> float:
    """This process's own peak RSS. VmHWM, not getrusage: ru_maxrss carries the parent's peak over exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_ingest(zip_path: str, out_dir: str) -> None:
    """Run one ingestion in this (fresh) process and print its figures as JSON."""
    t0 = time.perf_counter()
    report = ingest_archive(Path(zip_path), Path(out_dir), IngestConfig(patient_salt="bench"))
    seconds = time.perf_counter() - t0
    peak_kb = peak_rss_kb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "accepted": report.accepted,
                "rejected": len(report.rejected),
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


def run_child(zip_path: Path, out_dir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(
        [sys.executable, __file__, "--child-ingest", str(zip_path), str(out_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ingest child failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out_dir, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_images(n: int, side: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [render_cxr(rng, pneumonia=bool(i % 2), size=side) for i in range(n)]


def write_format_zip(path: Path, images: list[np.ndarray], fmt: str, ts: str | None) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, img in enumerate(images):
            cls = "PNEUMONIA" if i % 2 else "NORMAL"
            if fmt == "png":
                buf = io.BytesIO()
                Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(buf, format="PNG", compress_level=6)
                data, ext = buf.getvalue(), "png"
            else:
                assert ts is not None
                data, ext = (
                    dicom_bytes(
                        img,
                        transfer_syntax=ts,
                        patient_id=f"B{i // 2:05d}",
                        photometric="MONOCHROME1" if i % 3 == 0 else "MONOCHROME2",
                    ),
                    "dcm",
                )
            zf.writestr(f"{cls}/{i:05d}.{ext}", data)


def write_large_zip(path: Path, size_gb: float, side: int = 2048) -> int:
    """A stored zip of ~size_gb of distinct side x side 16-bit DICOMs; returns the file count."""
    rng = np.random.default_rng(1)
    base = {
        cls: dicom_bytes(render_cxr(rng, pneumonia=cls == "PNEUMONIA", size=side), bits_stored=16)
        for cls in ("NORMAL", "PNEUMONIA")
    }
    pixel_offset = {cls: len(data) - side * side * 2 for cls, data in base.items()}
    n = max(2, int(size_gb * 2**30 / len(base["NORMAL"])))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i in range(n):
            cls = "PNEUMONIA" if i % 2 else "NORMAL"
            data = bytearray(base[cls])
            at = pixel_offset[cls] + (i * 4096) % (side * side)  # a counter in the pixels, spread over rows
            data[at : at + 8] = struct.pack("<Q", i)
            zf.writestr(f"{cls}/{i:06d}.dcm", bytes(data))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="images per format for the throughput table")
    ap.add_argument("--side", type=int, default=512, help="image side for the throughput table")
    ap.add_argument("--size-gb", type=float, default=2.0, help="size of the large upload")
    ap.add_argument("--small-gb", type=float, default=0.25, help="size of the smaller upload it is compared with")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the zips (default: a temp dir)")
    ap.add_argument("--child-ingest", nargs=2, metavar=("ZIP", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_ingest:
        child_ingest(*args.child_ingest)
        return

    work = Path(tempfile.mkdtemp(prefix="hilum-bench-", dir=args.workdir))
    try:
        print(f"machine: {os.cpu_count()} CPUs; work dir {work}")
        t0 = time.perf_counter()
        images = make_images(args.n, args.side)
        print(f"rendered {args.n} synthetic images at {args.side} px in {time.perf_counter() - t0:.1f} s\n")
        print(f"{'format':<36} {'images':>6} {'zip MB':>8} {'seconds':>8} {'images/s':>9} {'peak RSS MB':>12}")
        for fmt, ts in FORMATS:
            label = fmt if ts is None else f"dicom {ts}"
            z = work / f"{fmt}-{ts}.zip"
            write_format_zip(z, images, fmt, ts)
            r = run_child(z, work / "out")
            if r["accepted"] != args.n:
                print(f"  warning: {label}: {r['accepted']} accepted, {r['rejected']} rejected")
            print(
                f"{label:<36} {args.n:>6} {z.stat().st_size / 2**20:>8.1f} {r['seconds']:>8.2f} "
                f"{args.n / r['seconds']:>9.1f} {r['peak_rss_mb']:>12.0f}"
            )
            z.unlink()
        del images

        if not args.skip_large:
            print(
                f"\n{'large upload (2048 px 16-bit DICOM)':<36} {'files':>6} {'zip GB':>8} {'seconds':>8} "
                f"{'images/s':>9} {'peak RSS MB':>12}"
            )
            peaks = []
            for gb in (args.small_gb, args.size_gb):
                z = work / f"large-{gb}.zip"
                t0 = time.perf_counter()
                n = write_large_zip(z, gb)
                gen_s = time.perf_counter() - t0
                r = run_child(z, work / "out")
                peaks.append(r["peak_rss_mb"])
                print(
                    f"{f'{gb:g} GB upload (generated in {gen_s:.0f} s)':<36} {n:>6} {z.stat().st_size / 2**30:>8.2f} "
                    f"{r['seconds']:>8.1f} {n / r['seconds']:>9.1f} {r['peak_rss_mb']:>12.0f}"
                )
                z.unlink()
            print(
                f"\npeak RSS ratio {args.size_gb:g} GB / {args.small_gb:g} GB: {peaks[1] / peaks[0]:.2f} "
                "(about 1 means memory does not grow with the upload)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
