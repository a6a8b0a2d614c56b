"""The large-image attack of issue 11: peak memory of a running API under small files of huge images.

    python bench/attack_memory.py                  # 8 concurrent 9990 x 9990 PNGs (~100 kB each)
    python bench/attack_memory.py --concurrency 16 --side 9990

Starts a real API (uvicorn, SQLite, the Redis at REDIS_URL or 127.0.0.1:6379/15) twice: with the
shipped limits, then with the pixel limit and the decode bound lifted (what the attack met before).
Each time it posts the same files concurrently to ``/v1/preview`` (which decodes exactly as prediction
does) and prints the API process's peak RSS (VmHWM) before and after, and the answers' status codes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def huge_png(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of zeros, compressed row by row (never the pixels in memory)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def attack(label: str, extra_env: dict[str, str], data: bytes, concurrency: int) -> None:
    key = "hk_bench_" + secrets.token_hex(16)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_")}
        env.update(
            HILUM_ENV="test",
            HILUM_DATA_DIR=tmp,
            REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
            HILUM_BOOTSTRAP_ADMIN_KEY=key,
            HILUM_RATE_LIMIT_ENABLED="false",
            OMP_NUM_THREADS="1",
            **extra_env,
        )
        command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--port", str(port)]
        api = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API did not start")
                time.sleep(0.2)
            headers = {"Authorization": f"Bearer {key}"}
            # One small request first, so the figure "before" includes a warmed-up process.
            httpx.post(base + "/v1/preview", headers=headers, files={"file": ("a.png", huge_png(64, 64))}, timeout=60)
            before = peak_rss_mb(api.pid)

            def one(_: int) -> int:
                files = {"file": ("bomb.png", data, "image/png")}
                return httpx.post(base + "/v1/preview", headers=headers, files=files, timeout=300).status_code

            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                codes = list(pool.map(one, range(concurrency)))
            seconds = time.perf_counter() - t0
            after = peak_rss_mb(api.pid)
            print(
                f"{label:<34} peak RSS before {before:7.0f} MB  after {after:7.0f} MB  "
                f"(+{after - before:.0f} MB)  answers {sorted(set(codes))}  {seconds:.1f} s"
            )
        finally:
            api.terminate()
            api.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=9990)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-unprotected", action="store_true", help="only the shipped limits")
    args = parser.parse_args()
    data = huge_png(args.side, args.side)
    print(f"{args.concurrency} concurrent uploads of a {args.side} x {args.side} PNG of {len(data) / 1e3:.0f} kB")
    attack("shipped limits", {}, data, args.concurrency)
    if not args.skip_unprotected:
        attack(
            "pixel limit lifted, 2 decodes at once",
            {"HILUM_MAX_IMAGE_PIXELS": str(10**9), "HILUM_DECODE_CONCURRENCY": "2"},
            data,
            args.concurrency,
        )
        attack(
            "limits lifted (before issue 11)",
            {"HILUM_MAX_IMAGE_PIXELS": str(10**9), "HILUM_DECODE_CONCURRENCY": "64"},
            data,
            args.concurrency,
        )


if __name__ == "__main__":
    main()
