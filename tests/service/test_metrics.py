"""Metrics and logs of a running stack after one training job and a few predictions, over real HTTP:
the API's /metrics, the worker's metrics port, JSON logs with request, job and dataset ids and no key."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from pipelines.synthetic import render_cxr, write_zip
from tests.conftest import free_port, wait_for
from tests.service.ops import eventually, ops_stack

pytestmark = pytest.mark.e2e

MODEL = "metrics-cxr"
PREDICTIONS = 3


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scrape: dict, name: str, **labels: str) -> float:
    """Sum over series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= set(ls))


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[dict]:
    """A stack (JSON logs, worker metrics port) after one upload, one training job and a few predictions."""
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_port()
    env = {
        "HILUM_LOG_FORMAT": "json",
        "HILUM_WORKER_METRICS_PORT": str(port),
        "HILUM_METRICS_DB_CACHE_S": "0",
    }
    with ops_stack(tmp, worker=True, **env) as stack:
        with stack.client() as admin:
            keys = {
                role: admin.post("/v1/keys", json={"name": f"m-{role}", "role": role}).json()["key"]
                for role in ("staff", "clinician")
            }
        upload = write_zip(tmp / "cxr.zip", n_per_class=16, size=96, seed=5)
        with stack.client(keys["staff"]) as staff:
            with upload.open("rb") as fh:
                r = staff.post(
                    "/v1/datasets",
                    files={"file": ("cxr.zip", fh, "application/zip")},
                    headers={"X-Request-ID": "req-upload-42"},
                )
            assert r.status_code == 202, r.text
            upload_request_id = r.headers["X-Request-ID"]
            dataset = wait_for(staff, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
            assert dataset["status"] == "ready", dataset
            spec = {"backbone": "test_resnet", "image_size": 64, "batch_size": 16, "strategy": "full", "epochs": 2}
            r = staff.post("/v1/jobs", json={**spec, "model_name": MODEL, "dataset_id": dataset["id"]})
            assert r.status_code == 202, r.text
            job = wait_for(staff, f"/v1/jobs/{r.json()['id']}", {"succeeded", "failed", "cancelled"}, timeout=300)
            assert job["status"] == "succeeded", job
        with stack.client(keys["clinician"]) as clinician:
            for i in range(PREDICTIONS):
                r = clinician.post(  # explicit version: a tiny model may be flagged unfit for the default
                    f"/v1/models/{MODEL}/predict", params={"version": 1}, files={"file": ("x.png", png(i), "image/png")}
                )
                assert r.status_code == 200, r.text
                assert len(r.headers["X-Request-ID"]) == 32  # none sent: one made up and returned
        with stack.client() as admin:  # the label the model gave (an answer may withhold it)
            labels = [p["label"] for p in admin.get("/v1/predictions", params={"model": MODEL}).json()]
        worker_url = f"http://127.0.0.1:{port}/metrics"
        # The worker's heartbeat gauge and the finished tasks are visible on its own port.
        eventually(lambda: "hilum_worker_tasks_total" in httpx.get(worker_url).text, what="worker metrics")
        yield {
            "stack": stack,
            "keys": {**keys, "admin": stack.admin_key},
            "dataset": dataset,
            "job": job,
            "labels": labels,
            "upload_request_id": upload_request_id,
            "api": samples(httpx.get(stack.base_url + "/metrics").text),
            "worker": samples(httpx.get(worker_url).text),
            "worker_text": httpx.get(worker_url).text,
        }


def png(seed: int) -> bytes:
    img = render_cxr(np.random.default_rng(seed), pneumonia=seed % 2 == 0, size=96)
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def test_api_metrics_after_training_and_predictions(ran: dict) -> None:
    api = ran["api"]
    route = "/v1/models/{name}/predict"
    assert value(api, "hilum_http_requests_total", method="POST", route=route, status="200") == PREDICTIONS
    assert value(api, "hilum_http_request_duration_seconds_count", method="POST", route=route, status="200") == 3
    assert value(api, "hilum_http_requests_total", method="POST", route="/v1/jobs", status="202") == 1
    assert len(ran["labels"]) == PREDICTIONS
    for label in set(ran["labels"]):
        expected = ran["labels"].count(label)
        assert value(api, "hilum_predictions_total", model=MODEL, version="1", label=label) == expected
    assert total(api, "hilum_predictions_total", model=MODEL) == PREDICTIONS
    assert value(api, "hilum_batch_size_count") >= 1 and value(api, "hilum_batch_size_sum") == PREDICTIONS
    assert value(api, "hilum_batch_queue_wait_seconds_count") == PREDICTIONS
    assert value(api, "hilum_model_cache_events_total", event="load") == 1
    assert value(api, "hilum_model_cache_events_total", event="hit") == PREDICTIONS - 1
    assert value(api, "hilum_model_cache_models") == 1 and value(api, "hilum_model_cache_bytes") > 0
    assert value(api, "hilum_jobs", status="succeeded") == 1
    assert value(api, "hilum_datasets", status="ready") == 1
    assert ("hilum_queue_depth", (("queue", "gpu"),)) in api and ("hilum_queue_depth", (("queue", "ingest"),)) in api


def test_queue_depth_counts_waiting_messages(redis_available: None) -> None:
    """Kombu keeps one Redis list per priority step; the gauge adds them up, under the broker key prefix."""
    import secrets

    import redis

    from hilum.settings import Settings
    from service.metrics import StateCollector

    prefix = f"hilum-test-{secrets.token_hex(4)}:"
    settings = Settings(redis_url="redis://127.0.0.1:6379/13", broker_key_prefix=prefix)
    client = redis.Redis.from_url(settings.redis_url or "")
    client.rpush(prefix + "gpu", "a", "b")
    client.rpush(prefix + "gpu\x06\x163", "c")
    client.rpush("gpu", "another deployment's message")  # no prefix: not ours
    try:
        assert StateCollector(settings, lambda: (0, 0)).queue_depths() == {"gpu": 3, "ingest": 0}
    finally:
        client.delete(prefix + "gpu", prefix + "gpu\x06\x163")
        client.lpop("gpu")


def test_worker_metrics_after_training(ran: dict) -> None:
    worker = ran["worker"]
    assert value(worker, "hilum_training_epoch_seconds_count", backbone="test_resnet") == 2
    assert value(worker, "hilum_training_throughput_images_per_second", backbone="test_resnet") > 0
    assert total(worker, "hilum_worker_tasks_total", task="hilum.train", outcome="success") == 1
    assert total(worker, "hilum_worker_tasks_total", task="hilum.ingest", outcome="success") == 1
    beats = [v for (n, _), v in worker.items() if n == "hilum_worker_heartbeat_timestamp_seconds"]
    assert beats and time.time() - max(beats) < 60


def read_json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_json_logs_carry_ids_and_no_keys(ran: dict) -> None:
    logs: Path = ran["stack"].logs
    api = read_json_lines(logs / "api.log")
    worker = read_json_lines(logs / "worker-w1.log")
    assert api and worker
    upload_lines = [e for e in api if e.get("request_id") == ran["upload_request_id"]]
    assert ran["upload_request_id"] == "req-upload-42"
    assert any(e.get("event") == "request" and e.get("route") == "/v1/datasets" for e in upload_lines)
    job_lines = [e for e in worker if e.get("job_id") == ran["job"]["id"]]
    dataset_lines = [e for e in worker if e.get("dataset_id") == ran["dataset"]["id"]]
    assert job_lines and dataset_lines
    assert all(e["process"] == "worker" and "level" in e and "timestamp" in e for e in job_lines)
    everything = "".join(p.read_text(errors="replace") for p in logs.iterdir())
    for secret in ran["keys"].values():
        assert secret not in everything


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_gauges_once_cuda_is_used() -> None:
    import torch

    from service.metrics import GPU_METRICS, gpu_memory_metrics

    held = torch.zeros(2**20, device="cuda")
    families = {f.name: f for f in gpu_memory_metrics()}
    assert set(families) == set(GPU_METRICS)
    assert families["hilum_gpu_memory_allocated_bytes"].samples[0].value >= held.numel() * 4


def test_no_gpu_gauges_without_cuda_in_use() -> None:
    import torch

    from service.metrics import gpu_memory_metrics

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA already in use in this process")
    assert list(gpu_memory_metrics()) == []
    assert not torch.cuda.is_initialized()  # a scrape never starts a CUDA context
