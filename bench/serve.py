"""Serving benchmark: predict latency and throughput over HTTP, with and without micro-batching.

    python bench/serve.py                  # own stack: upload, train resnet18 (1 epoch, frozen), measure
    python bench/serve.py --quick          # smaller dataset and fewer requests
    python bench/serve.py --requests 512   # 512 requests at c=16 (and 512/4 at c=1)
    python bench/serve.py --url http://host:8000 --key hk_... --model pneumonia   # an existing server

By default it starts its own stack (`python -m hilum.cli run`: API, Celery worker, embedded Redis) on a
temporary data dir and a free port, uploads a synthetic dataset, trains the "bench" model, measures
``POST /v1/models/bench/predict`` at concurrency 1 and 16 for a PNG and a DICOM, then restarts the
stack with ``HILUM_MICRO_BATCHING=false`` (same data dir, so the model is already there) and measures
again. Finally it times the bare model forward in-process (``Predictor`` on the artifact file, batch 1
and 16, preprocessed tensors, no HTTP, no decoding) and prints one table plus two ratios:

    HTTP+decode overhead = p50 latency at c=1 / bare forward at batch 1
    batching gain        = throughput at c=16 with micro-batching / without

Every process it starts runs in its own process group and is stopped in a ``finally`` (SIGTERM, then
SIGKILL). The load generator runs on the same machine as the server, so on a small box the client's
CPU use is part of the picture; figures are comparable only between runs on the same machine.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL_NAME = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """A `hilum run` subprocess (API + worker + embedded Redis) in its own process group."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole group (the launcher stops its children in order), SIGKILL what outlives it."""
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            return
        if self.proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # stragglers (a Celery pool child, uvicorn) even when the launcher itself exited
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def start_stack(
    data_dir: Path, admin_key: str, *, micro_batching: bool, log_path: Path, wait_s: float, api_workers: int = 1
) -> Stack:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_") and k != "REDIS_URL"}
    env.update(
        HILUM_DATA_DIR=str(data_dir),
        HILUM_PORT=str(port),
        HILUM_BOOTSTRAP_ADMIN_KEY=admin_key,
        HILUM_MICRO_BATCHING="true" if micro_batching else "false",
        HILUM_RATE_LIMIT_ENABLED="false",  # a load test is not abuse
        HILUM_API_WORKERS=str(api_workers),
        PYTHONUNBUFFERED="1",
    )
    log = open(log_path, "ab")  # noqa: SIM115 - the child holds it; closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilum.cli", "run"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() signals all of it
    )
    log.close()
    stack = Stack(proc=proc, base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        wait_healthy(stack, wait_s)
    except BaseException:
        stack.stop()
        raise
    return stack


def wait_healthy(stack: Stack, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            raise RuntimeError(f"`hilum run` exited with {stack.proc.returncode}:\n{stack.log_tail()}")
        try:
            r = httpx.get(stack.base_url + "/healthz", timeout=2)
            if r.status_code == 200 and r.json().get("status") == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the stack did not become healthy within {wait_s:.0f} s:\n{stack.log_tail()}")


@contextmanager
def running_stack(
    data_dir: Path, admin_key: str, *, micro_batching: bool, logs: Path, wait_s: float, api_workers: int = 1
) -> Iterator[str]:
    name = "batching-on" if micro_batching else "batching-off"
    print(f"starting the stack ({name}, {api_workers} API process(es)); log: {logs / (name + '.log')}", flush=True)
    stack = start_stack(
        data_dir,
        admin_key,
        micro_batching=micro_batching,
        log_path=logs / f"{name}.log",
        wait_s=wait_s,
        api_workers=api_workers,
    )
    try:
        yield stack.base_url
    finally:
        stack.stop()


# --------------------------------------------------------------------------- setting up the model


def poll(client: httpx.Client, path: str, *, done: str, failed: tuple[str, ...], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        body = client.get(path).raise_for_status().json()
        status = body.get("status", "")
        if status == done:
            return body
        if status in failed:
            raise RuntimeError(f"{path} ended {status}: {body.get('error') or body}")
        progress = body.get("progress") or {}
        phase = progress.get("phase", "") if isinstance(progress, dict) else ""
        if f"{status} {phase}".strip() != last:
            last = f"{status} {phase}".strip()
            print(f"  {path}: {last}", flush=True)
        time.sleep(1.0)
    raise TimeoutError(f"{path} not {done} within {timeout_s:.0f} s (last: {last})")


def train_bench_model(
    client: httpx.Client, work: Path, *, n_per_class: int, timeout_s: float, backbone: str = "resnet18"
) -> int:
    """Upload a synthetic dataset, train the bench model; returns the new model version."""
    from pipelines.synthetic import write_zip

    zip_path = write_zip(work / "dataset.zip", n_per_class=n_per_class, size=256, seed=0)
    t0 = time.perf_counter()
    with open(zip_path, "rb") as f:
        r = client.post("/v1/datasets", files={"file": ("dataset.zip", f, "application/zip")})
    dataset = r.raise_for_status().json()
    dataset = poll(client, f"/v1/datasets/{dataset['id']}", done="ready", failed=("failed",), timeout_s=timeout_s)
    print(f"dataset {dataset['id']} ready in {time.perf_counter() - t0:.1f} s: {dataset.get('class_counts')}")
    spec = {
        "dataset_id": dataset["id"],
        "backbone": backbone,
        "strategy": "frozen",
        "epochs": 1,
        "image_size": 224,
        "batch_size": 32,
        "model_name": MODEL_NAME,
    }
    t0 = time.perf_counter()
    job = client.post("/v1/jobs", json=spec).raise_for_status().json()
    job = poll(client, f"/v1/jobs/{job['id']}", done="succeeded", failed=("failed", "cancelled"), timeout_s=timeout_s)
    print(f"job {job['id']} succeeded in {time.perf_counter() - t0:.1f} s: model {MODEL_NAME} v{job['model_version']}")
    return int(job["model_version"])


def sample_files(side: int) -> dict[str, tuple[str, bytes, str]]:
    """One synthetic pneumonia X-ray as PNG and as a 12-bit DICOM: (filename, bytes, content type)."""
    from PIL import Image

    from pipelines.synthetic import dicom_bytes, render_cxr

    image01 = render_cxr(np.random.default_rng(123), pneumonia=True, size=side)
    buf = io.BytesIO()
    Image.fromarray(np.rint(image01 * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return {
        "png": ("xray.png", buf.getvalue(), "image/png"),
        "dicom": ("xray.dcm", dicom_bytes(image01, bits_stored=12), "application/dicom"),
    }


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    label: str
    concurrency: int
    n: int
    errors: int
    p50_ms: float
    p99_ms: float
    rps: float


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def measure_predict(
    base_url: str, key: str, model: str, upload: tuple[str, bytes, str], *, concurrency: int, n: int, label: str
) -> Result:
    """``n`` predictions from ``concurrency`` threads sharing one connection pool; latency per request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    name, _, query = model.partition("?")
    url = f"/v1/models/{name}/predict" + (f"?{query}" if query else "")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = iter(range(n))

    with httpx.Client(base_url=base_url, headers=headers, limits=limits, timeout=120.0) as client:

        def one() -> None:
            t0 = time.perf_counter()
            try:
                r = client.post(url, files={"file": upload})
                ok = r.status_code == 200 and "label" in r.json()
                err = "" if ok else f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as exc:
                err = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - t0
            with lock:
                if err:
                    errors.append(err)
                else:
                    latencies.append(elapsed)

        def worker() -> None:
            while True:
                with lock:
                    i = next(remaining, None)
                if i is None:
                    return
                one()

        for _ in range(min(4, n)):  # warm-up: model in the cache, connections open
            one()
        latencies.clear()
        errors.clear()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(worker) for _ in range(concurrency)]:
                f.result()
        wall = time.perf_counter() - t0
    if errors:
        print(f"  {label} c={concurrency}: {len(errors)} errors, e.g. {errors[0]}", flush=True)
    ms = [x * 1000 for x in latencies]
    return Result(label, concurrency, n, len(errors), percentile(ms, 50), percentile(ms, 99), len(latencies) / wall)


def measure_server(base_url: str, key: str, model: str, files: dict, *, label: str, requests: int) -> list[Result]:
    results = []
    for fmt, upload in files.items():
        for concurrency, n in ((1, max(8, requests // 4)), (16, requests)):
            r = measure_predict(base_url, key, model, upload, concurrency=concurrency, n=n, label=f"{label} {fmt}")
            print(
                f"  {r.label:<24} c={concurrency:<3} p50 {r.p50_ms:8.1f} ms  p99 {r.p99_ms:8.1f} ms  "
                f"{r.rps:7.1f} req/s  ({r.n} requests, {r.errors} errors)",
                flush=True,
            )
            results.append(r)
    return results


def bare_forward(artifact_path: Path, *, repeats: int) -> dict[int, tuple[float, float]]:
    """(median, best) ms of one model forward (preprocessed tensors, inference mode) at batch 1 and 16, and on a
    GPU at larger batches too (the best of which is the bare forward's throughput ceiling).

    It runs where and how the server runs it: ``Predictor.forward`` on the serving device (``auto``) in the
    serving precision, with the input's host-to-device copy and a CUDA synchronisation inside the timing.

    The forwards run in a worker thread, as the server runs them (``asyncio.to_thread``), with torch's
    default thread count: on a loaded 2-core box, forwards from the main thread (whose OpenMP team
    spin-waits for a descheduled partner) were several times slower than from a worker thread.
    On a loaded machine the median suffers far more than the best run, so both are reported.
    """
    import torch

    from pipelines.infer import Predictor
    from pipelines.model_input import model_input, preprocessing_of
    from pipelines.synthetic import render_cxr

    predictor = Predictor.load(artifact_path, device="auto")
    cuda = predictor.device.type == "cuda"
    print(f"bare forward on {predictor.device} in {predictor.dtype}", flush=True)
    a = predictor.artifact
    pixels = np.rint(render_cxr(np.random.default_rng(5), pneumonia=True, size=512) * 255).astype(np.uint8)
    x1 = model_input(pixels, preprocessing_of(a))[None]

    def timed(batch: int) -> tuple[float, float]:
        x = x1.expand(batch, -1, -1, -1).contiguous()
        times = []
        for _ in range(3):  # warm-up (cuDNN picks its kernels per shape)
            predictor.forward(x)
        for _ in range(max(5, repeats // batch)):
            t0 = time.perf_counter()
            predictor.forward(x).cpu()  # the copy of the logits back to the host waits for the GPU
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times), min(times)

    batches = (1, 16, 32, 64, 128, 256) if cuda else (1, 16)
    with torch.inference_mode(), ThreadPoolExecutor(1) as pool:
        return {batch: pool.submit(timed, batch).result() for batch in batches}


def report(results: list[Result], forward: dict[int, tuple[float, float]] | None) -> None:
    print("\n" + "=" * 86)
    print(f"{'run':<26}{'conc':>5}{'requests':>10}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for r in results:
        print(f"{r.label:<26}{r.concurrency:>5}{r.n:>10}{r.errors:>8}{r.p50_ms:>10.1f}{r.p99_ms:>10.1f}{r.rps:>10.1f}")
    if forward:
        for batch, (median, best) in forward.items():
            print(
                f"{'bare forward, median':<26}{'b=' + str(batch):>5}{'':>18}{median:>10.1f}{'':>10}"
                f"{1000 * batch / median:>10.1f}"
            )
            print(
                f"{'bare forward, best':<26}{'b=' + str(batch):>5}{'':>18}{best:>10.1f}{'':>10}"
                f"{1000 * batch / best:>10.1f}"
            )
    print("=" * 86)
    print("(bare forward: req/s column = images/s; p50 column = ms per batch)")
    if forward:
        batch, (median, _) = max(forward.items(), key=lambda kv: kv[0] / kv[1][0])
        print(f"bare forward at its best batch: b={batch}, {median:.2f} ms, {1000 * batch / median:.0f} images/s")
    by = {(r.label, r.concurrency): r for r in results}
    for fmt in ("png", "dicom"):
        on1, on16, off16 = (
            by.get((f"batching on {fmt}", 1)),
            by.get((f"batching on {fmt}", 16)),
            by.get((f"batching off {fmt}", 16)),
        )
        server1 = on1 or by.get((f"server {fmt}", 1))
        if server1 and forward:
            median, best = forward[1]
            print(
                f"HTTP+decode overhead ({fmt}): p50 c=1 {server1.p50_ms:.1f} ms / bare forward b=1 "
                f"{median:.1f} ms (median) = {server1.p50_ms / median:.2f}x; / {best:.1f} ms (best) = "
                f"{server1.p50_ms / best:.2f}x"
            )
        if on16 and off16 and off16.rps > 0:
            print(
                f"batching gain ({fmt}): {on16.rps:.1f} / {off16.rps:.1f} req/s at c=16 = {on16.rps / off16.rps:.2f}x"
            )


# --------------------------------------------------------------------------- main


def serving_device_line() -> str:
    import torch

    from models.device import device_info, resolve_device, resolve_precision

    device = resolve_device("auto")
    return device_info(device, resolve_precision(device, "auto")).describe() + f", torch {torch.__version__}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an existing server (needs --key); default: start our own stack")
    p.add_argument("--key", help="API key for --url")
    p.add_argument("--model", default=MODEL_NAME, help="model to call with --url (default: bench)")
    p.add_argument("--artifact", type=Path, help="with --url: artifact file for the bare forward (else downloaded)")
    p.add_argument("--requests", type=int, help="requests at c=16 (c=1 runs a quarter); default 256, quick 64")
    p.add_argument("--per-class", type=int, help="synthetic images per class; default 40, quick 16")
    p.add_argument("--image-side", type=int, default=512, help="side of the uploaded test X-ray (px)")
    p.add_argument("--quick", action="store_true", help="smaller dataset, fewer requests")
    p.add_argument("--timeout", type=float, default=900, help="max seconds to wait for ingestion / training each")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir and logs")
    p.add_argument("--api-workers", type=int, default=1, help="API processes (HILUM_API_WORKERS) of our own stack")
    p.add_argument("--backbone", help="backbone of the bench model; default resnet50 on a GPU, resnet18 on the CPU")
    args = p.parse_args(argv)
    if not args.backbone:
        import torch

        args.backbone = "resnet50" if torch.cuda.is_available() else "resnet18"
    args.requests = args.requests or (64 if args.quick else 256)
    args.per_class = args.per_class or (16 if args.quick else 40)
    if args.url and not args.key:
        p.error("--url needs --key")
    return args


def run_own_stack(args: argparse.Namespace, work: Path, files: dict) -> tuple[list[Result], Path]:
    data_dir, logs = work / "data", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    key = "hk_bench_" + secrets.token_hex(16)
    results: list[Result] = []
    workers = args.api_workers
    with running_stack(data_dir, key, micro_batching=True, logs=logs, wait_s=180, api_workers=workers) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
            version = train_bench_model(
                client, work, n_per_class=args.per_class, timeout_s=args.timeout, backbone=args.backbone
            )
        # By explicit version: the bench model is trained for seconds and may be registered as not fit for use.
        model = f"{MODEL_NAME}?version={version}"
        results += measure_server(url, key, model, files, label="batching on", requests=args.requests)
    with running_stack(data_dir, key, micro_batching=False, logs=logs, wait_s=180, api_workers=workers) as url:
        results += measure_server(url, key, model, files, label="batching off", requests=args.requests)
    return results, data_dir / "models" / MODEL_NAME / f"v{version}" / "model.pt"


def run_existing(args: argparse.Namespace, work: Path, files: dict) -> tuple[list[Result], Path | None]:
    results = measure_server(args.url, args.key, args.model, files, label="server", requests=args.requests)
    if args.artifact:
        return results, args.artifact
    with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"}, timeout=120) as client:
        try:
            model = client.get(f"/v1/models/{args.model}").raise_for_status().json()
            version = max(v["version"] for v in model["versions"])
            r = client.get(f"/v1/models/{args.model}/versions/{version}/artifact").raise_for_status()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"no artifact for the bare forward ({exc}); pass --artifact", flush=True)
            return results, None
    path = work / "model.pt"
    path.write_bytes(r.content)
    return results, path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hilum-bench-serve-"))
    files = sample_files(args.image_side)
    print(
        f"work dir {work}; PNG {len(files['png'][1]) // 1024} KiB, DICOM {len(files['dicom'][1]) // 1024} KiB "
        f"({args.image_side} px); {args.requests} requests at c=16, {max(8, args.requests // 4)} at c=1",
        flush=True,
    )
    print(f"{os.cpu_count()} CPUs; load average at the start: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"serving device: {serving_device_line()}; bench model backbone {args.backbone} at 224 px", flush=True)
    try:
        if args.url:
            results, artifact = run_existing(args, work, files)
        else:
            results, artifact = run_own_stack(args, work, files)
        forward = bare_forward(artifact, repeats=64 if args.quick else 128) if artifact else None
        report(results, forward)
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
