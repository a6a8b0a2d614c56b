"""The whole loop over real HTTP: upload, ingest, train on a Celery worker, register, predict."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from pipelines.synthetic import render_cxr, write_zip
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

PER_CLASS = 40


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zip(tmp_path_factory.mktemp("upload") / "cxr.zip", n_per_class=PER_CLASS, size=96, seed=1)


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    out = {}
    with stack.client() as admin:
        for role in ("staff", "clinician"):
            r = admin.post("/v1/keys", json={"name": f"test-{role}", "role": role})
            assert r.status_code == 201, r.text
            out[role] = r.json()["key"]
    return out


@pytest.fixture(scope="module")
def ready_dataset(stack: Stack, keys: dict[str, str], dataset_zip: Path) -> dict:
    with stack.client(keys["staff"]) as staff:
        with dataset_zip.open("rb") as fh:
            r = staff.post(
                "/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")}, data={"name": "synthetic"}
            )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "ingesting"
        return wait_for(staff, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)


def test_health_needs_no_key(stack: Stack) -> None:
    import httpx

    body = httpx.get(stack.base_url + "/healthz").json()
    assert body == {"status": "ok", "database": "ok", "broker": "ok"}


def test_keys_and_roles(stack: Stack, keys: dict[str, str], dataset_zip: Path) -> None:
    import httpx

    assert httpx.get(stack.base_url + "/v1/models").status_code == 401
    with stack.client("hk_not_a_key") as bad:
        assert bad.get("/v1/models").status_code == 401
    with stack.client(keys["clinician"]) as clinician:
        assert clinician.get("/v1/models").status_code == 200
        with dataset_zip.open("rb") as fh:
            r = clinician.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")})
        assert r.status_code == 403
        assert clinician.post("/v1/jobs", json={}).status_code == 403
    with stack.client(keys["staff"]) as staff:
        assert staff.post("/v1/keys", json={"name": "x", "role": "admin"}).status_code == 403
        assert staff.get("/v1/keys").status_code == 403
    with stack.client() as admin:
        listed = admin.get("/v1/keys").json()
        assert {k["role"] for k in listed} >= {"admin", "staff", "clinician"}
        assert all("key" not in k for k in listed)


def test_upload_ingests_dataset(ready_dataset: dict) -> None:
    assert ready_dataset["status"] == "ready", ready_dataset
    assert ready_dataset["image_count"] == 2 * PER_CLASS
    assert ready_dataset["class_counts"] == {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}
    assert ready_dataset["rejected"] == []


def test_train_register_and_predict(stack: Stack, keys: dict[str, str], ready_dataset: dict) -> None:
    spec = {
        "dataset_id": ready_dataset["id"],
        "backbone": "test_resnet",
        "strategy": "frozen",  # a head on frozen random features: 20 cheap epochs learn enough to be fit for use
        "epochs": 20,
        "image_size": 64,
        "batch_size": 16,
        "model_name": "pneumonia-e2e",
        "lr": 3e-2,
        "early_stopping_patience": None,  # every epoch: the progress below counts all 20
    }
    with stack.client(keys["staff"]) as staff:
        r = staff.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        assert r.json()["pretrained"] is False and "random weights" in r.json()["warnings"][0]  # weights: none
        job = wait_for(staff, f"/v1/jobs/{r.json()['id']}", {"succeeded", "failed", "cancelled"}, timeout=300)
        assert job["status"] == "succeeded", job
        assert job["progress"]["epoch"] == 20 and job["progress"]["epochs"] == 20
        val = job["metrics"]["val"]
        assert 0.0 <= val["accuracy"] <= 1.0 and val["auroc"] is not None
        assert job["model_version"] == 1

    with stack.client(keys["clinician"]) as clinician:
        models = clinician.get("/v1/models").json()
        entry = next(m for m in models if m["name"] == "pneumonia-e2e")
        assert [v["version"] for v in entry["versions"]] == [1]

        png = _synthetic_png(pneumonia=True)
        r = clinician.post("/v1/models/pneumonia-e2e/predict", files={"file": ("x.png", png, "image/png")})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model"] == "pneumonia-e2e" and answer["version"] == 1
        assert answer["fit_for_use"] is True and answer["pretrained"] is False
        assert answer["label"] in {"NORMAL", "PNEUMONIA"}
        assert set(answer["probabilities"]) == {"NORMAL", "PNEUMONIA"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)

        r = clinician.post(
            "/v1/models/pneumonia-e2e/predict", params={"version": 1}, files={"file": ("x.png", png, "image/png")}
        )
        assert r.status_code == 200 and r.json()["version"] == 1
        r = clinician.post(
            "/v1/models/pneumonia-e2e/predict", params={"version": 9}, files={"file": ("x.png", png, "image/png")}
        )
        assert r.status_code == 404 and "version 9" in r.json()["detail"]
        r = clinician.post(
            "/v1/models/pneumonia-e2e/predict", files={"file": ("notes.txt", b"not an image at all", "text/plain")}
        )
        assert r.status_code == 422 and "cannot use this file" in r.json()["detail"]


def _synthetic_png(*, pneumonia: bool) -> bytes:
    import numpy as np
    from PIL import Image

    img = render_cxr(np.random.default_rng(7), pneumonia=pneumonia, size=96)
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
