"""Micro-batching over real HTTP (uvicorn): concurrent predictions for one version share forward passes
(`hilum_batch_size` observes batches of more than one), each caller gets its own film's answer, and with
`HILUM_MICRO_BATCHING=false` every forward pass holds one film."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from hilum.db import session_scope
from hilum.registry import register_version
from hilum.storage import Storage
from hilum.tables import Dataset, Job
from pipelines.synthetic import render_cxr
from tests.artifacts import tiny_artifact
from tests.conftest import Stack
from tests.service.ops import ops_stack
from tests.service.test_metrics import samples, value

pytestmark = pytest.mark.e2e

MODEL = "tiny-served"
CONCURRENT = 8


def register_tiny_model(stack: Stack, name: str = MODEL) -> None:
    """Version 1 of ``name``: an untrained test_resnet at 32 px, registered as a finished job registers one."""
    path = tiny_artifact(stack.data_dir.parent / f"{name}.pt", weights="none")
    with session_scope(stack.database_url) as session:
        session.add(Dataset(id=f"ds-{name}", name=name, status="ready"))
        job = Job(id=f"job-{name}", dataset_id=f"ds-{name}", status="succeeded", spec={}, model_name=name)
        session.add(job)
        session.flush()
        register_version(
            session,
            Storage(stack.data_dir),
            job,
            artifact=path,
            backbone="test_resnet",
            class_names=["NORMAL", "PNEUMONIA"],
            threshold=0.5,
            metrics={},
        )


def film(seed: int) -> bytes:
    image = render_cxr(np.random.default_rng(seed), pneumonia=seed % 2 == 1, size=96)
    buf = io.BytesIO()
    Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def predict_concurrently(stack: Stack) -> tuple[list[float], dict]:
    """CONCURRENT predictions of distinct films at once; (positive probability per film, /metrics scrape)."""
    with stack.client() as client:

        def ask(seed: int) -> float:
            r = client.post(f"/v1/models/{MODEL}/predict", files={"file": ("x.png", film(seed), "image/png")})
            assert r.status_code == 200, r.text
            return float(r.json()["probabilities"]["PNEUMONIA"])

        ask(100)  # the model is loaded once, outside the measured burst
        before = samples(httpx.get(stack.base_url + "/metrics").text)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            answers = list(pool.map(ask, range(CONCURRENT)))
        after = samples(httpx.get(stack.base_url + "/metrics").text)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return answers, delta


# A wide window, so that requests the 2-core CI box decodes one after the other still meet in the lane;
# the stack without micro-batching has the same window, so only the switch differs.
WINDOW = {"HILUM_BATCH_MAX_WAIT_MS": "250", "HILUM_BATCH_MAX_SIZE": "16"}


@pytest.fixture(scope="module")
def unbatched(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> tuple[list[float], dict]:
    env = {**WINDOW, "HILUM_MICRO_BATCHING": "false"}
    with ops_stack(tmp_path_factory.mktemp("unbatched"), worker=False, **env) as stack:
        register_tiny_model(stack)
        return predict_concurrently(stack)


def test_concurrent_predictions_share_forward_passes(
    tmp_path: Path, redis_available: None, unbatched: tuple[list[float], dict]
) -> None:
    with ops_stack(tmp_path, worker=False, **WINDOW) as stack:
        register_tiny_model(stack)
        answers, delta = predict_concurrently(stack)
    passes = value(delta, "hilum_batch_size_count")
    assert value(delta, "hilum_batch_size_sum") == CONCURRENT
    assert passes < CONCURRENT, f"{CONCURRENT} concurrent requests took {passes} forward passes: no batching"
    assert value(delta, "hilum_batch_size_bucket", le="1.0") < passes  # at least one pass held several films
    # Batched or not, every caller gets its own film's answer.
    np.testing.assert_allclose(answers, unbatched[0], atol=1e-5)


def test_without_micro_batching_every_pass_holds_one_film(unbatched: tuple[list[float], dict]) -> None:
    answers, delta = unbatched
    assert len(set(answers)) == CONCURRENT  # distinct films, distinct answers (the comparison above means something)
    assert value(delta, "hilum_batch_size_count") == CONCURRENT
    assert value(delta, "hilum_batch_size_bucket", le="1.0") == CONCURRENT
