"""Every bad input gets a 4xx JSON error that names the problem; nothing stored is touched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import Stack, wait_for
from tests.service.test_end_to_end import zip_bytes

pytestmark = pytest.mark.e2e


def png_bytes(size: int = 64) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def upload(client, content: bytes, filename: str = "data.zip"):  # type: ignore[no-untyped-def]
    return client.post("/v1/datasets", files={"file": (filename, content, "application/zip")})


def stored_state(stack: Stack, client) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    uploads = sorted(p.name for p in (stack.data_dir / "uploads").iterdir())
    return client.get("/v1/datasets").json(), uploads


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not a zip file", "zip"),
        (zip_bytes({}), "no usable files"),
        (zip_bytes({"a.png": png_bytes(), "b.png": png_bytes()}), "class folder"),
        (zip_bytes({"NORMAL/a.png": png_bytes(), "NORMAL/b.png": png_bytes()}), "class"),
        (zip_bytes({"../evil/NORMAL/a.png": png_bytes(), "PNEUMONIA/b.png": png_bytes()}), ".."),
    ],
    ids=["not-a-zip", "empty-zip", "no-class-folders", "single-class", "path-traversal"],
)
def test_bad_archives_are_refused(stack: Stack, content: bytes, expected: str) -> None:
    with stack.client() as client:
        before = stored_state(stack, client)
        r = upload(client, content)
        assert 400 <= r.status_code < 500, r.text
        assert expected.lower() in r.json()["detail"].lower(), r.json()
        assert stored_state(stack, client) == before


def test_upload_without_file_field(stack: Stack) -> None:
    with stack.client() as client:
        r = client.post("/v1/datasets", files={"other": ("x.zip", b"123", "application/zip")})
        assert r.status_code == 422 and "'file'" in r.json()["detail"]
        r = client.post("/v1/datasets", json={"file": "x"})
        assert r.status_code == 415


def test_dataset_whose_images_all_fail_ends_failed_and_cannot_train(stack: Stack) -> None:
    content = zip_bytes({"NORMAL/a.png": b"garbage", "PNEUMONIA/b.png": b"more garbage"})
    with stack.client() as client:
        r = upload(client, content)
        assert r.status_code == 202, r.text
        dataset = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=60)
        assert dataset["status"] == "failed" and dataset["error"]
        r = client.post(
            "/v1/jobs", json={"dataset_id": dataset["id"], "backbone": "test_resnet", "strategy": "full", "epochs": 1}
        )
        assert r.status_code == 409 and "not ready" in r.json()["detail"]


@pytest.mark.parametrize(
    ("change", "status", "expected"),
    [
        ({"backbone": "vgg99"}, 422, "known backbones"),
        ({"strategy": "half"}, 422, "strategy"),
        ({"epochs": 0}, 422, "epochs"),
        ({"epochs": 100000}, 422, "epochs"),
        ({"dataset_id": "nope"}, 404, "dataset 'nope' not found"),
        ({"weights": "unknown-weights"}, 404, "not registered"),
        ({"model_name": "Bad Name!"}, 422, "model_name"),
        ({"surprise": 1}, 422, "surprise"),
    ],
)
def test_bad_job_requests(stack: Stack, change: dict, status: int, expected: str) -> None:
    with stack.client() as client:
        dataset_id = _any_dataset_id(client)
        body = {"dataset_id": dataset_id, "backbone": "test_resnet", "strategy": "full", "epochs": 1} | change
        jobs_before = client.get("/v1/jobs").json()
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == status, r.text
        assert expected in r.text
        assert client.get("/v1/jobs").json() == jobs_before


def _any_dataset_id(client) -> str:  # type: ignore[no-untyped-def]
    datasets = client.get("/v1/datasets", params={"status": "ready"}).json()
    if datasets:
        return datasets[0]["id"]
    import tempfile
    from pathlib import Path

    from pipelines.synthetic import write_zip

    with tempfile.TemporaryDirectory() as tmp:
        path = write_zip(Path(tmp) / "d.zip", n_per_class=4, size=64)
        r = upload(client, path.read_bytes())
    assert r.status_code == 202, r.text
    return wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready"}, timeout=60)["id"]


def test_predict_unknown_model_and_non_image(stack: Stack) -> None:
    with stack.client() as client:
        r = client.post("/v1/models/no-such-model/predict", files={"file": ("x.png", png_bytes(), "image/png")})
        assert r.status_code == 404 and "no-such-model" in r.json()["detail"]
        r = client.post("/v1/models/no-such-model/predict")
        assert r.status_code == 422
