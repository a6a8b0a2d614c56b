"""Warm start and model import over HTTP: import an artifact, train from it, and the 4xx around both."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import torch

from pipelines.synthetic import write_zip
from tests.artifacts import tiny_artifact
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

CLASSES = ["NORMAL", "PNEUMONIA"]


def artifact_bytes(
    path: Path, *, classes: list[str] = CLASSES, backbone: str = "test_resnet", fit_for_use: bool = True
) -> bytes:
    """A Hilum artifact as another site exports it (random weights: import checks format, not skill)."""
    tiny_artifact(
        path,
        backbone=backbone,
        class_names=classes,
        image_size=64,
        threshold=None,
        metrics={"val": {"auroc": 0.9}},
        preprocessing={"max_side": 512, "image_size": 64, "mean": 0.5, "std": 0.25},
        fitness={"fit_for_use": fit_for_use, "assessed": True, "reasons": [] if fit_for_use else ["no skill"]},
    )
    return path.read_bytes()


def import_model(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post(
        "/v1/models/import",
        files={"file": ("model.pt", data, "application/octet-stream")},
        data={"model_name": name},
    )


@pytest.fixture(scope="module")
def staff_key(stack: Stack) -> str:
    with stack.client() as admin:
        r = admin.post("/v1/keys", json={"name": "warm-staff", "role": "staff"})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


@pytest.fixture(scope="module")
def imported(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    with stack.client() as admin:
        r = import_model(admin, "warmbase", artifact_bytes(tmp_path_factory.mktemp("art") / "model.pt"))
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def dataset(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    zip_path = write_zip(tmp_path_factory.mktemp("warm") / "cxr.zip", n_per_class=12, size=96, seed=7)
    with stack.client() as admin, zip_path.open("rb") as fh:
        r = admin.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")}, data={"name": "warm"})
        assert r.status_code == 202, r.text
        body = wait_for(admin, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
    assert body["status"] == "ready", body
    return body


def job_request(dataset: dict, **fields: object) -> dict:
    body: dict = {"dataset_id": dataset["id"], "strategy": "full", "epochs": 1, "image_size": 64, "batch_size": 8}
    body.update(model_name="warmed", init_from={"model": "warmbase", "version": 1})
    body.update(fields)
    return body


def test_import_registers_a_version_without_job_or_dataset(stack: Stack, imported: dict) -> None:
    assert imported["model_name"] == "warmbase" and imported["version"] == 1
    assert imported["job_id"] is None and imported["dataset_id"] is None
    assert imported["source"].startswith("imported:") and imported["backbone"] == "test_resnet"
    with stack.client() as admin:
        card = admin.get("/v1/models/warmbase/versions/1/card")
        assert card.status_code == 200, card.text
        assert card.json()["training"]["source"] == imported["source"]
        assert card.json()["training_data"]["dataset_id"] is None
        assert admin.get("/v1/models/warmbase").status_code == 200
        events = admin.get("/v1/audit", params={"action": "model.import"}).json()
        assert any(e["target"] == "model:warmbase/v1" for e in events), events


def test_import_refusals(stack: Stack, imported: dict, staff_key: str, tmp_path: Path) -> None:
    good = artifact_bytes(tmp_path / "good.pt")
    with stack.client(staff_key) as staff:
        assert import_model(staff, "warmbase", good).status_code == 403
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buf)
    with stack.client() as admin:
        r = import_model(admin, "other", b"not a model at all")
        assert r.status_code == 422 and "not a readable Hilum model artifact" in r.json()["detail"], r.text
        r = import_model(admin, "other", buf.getvalue())
        assert r.status_code == 422 and "hilum.classifier/1" in r.json()["detail"], r.text
        r = import_model(admin, "other", artifact_bytes(tmp_path / "b.pt", backbone="no_such_net"))
        assert r.status_code == 422 and "unknown backbone 'no_such_net'" in r.json()["detail"], r.text
        r = import_model(admin, "warmbase", artifact_bytes(tmp_path / "c.pt", classes=["NORMAL", "COVID"]))
        assert r.status_code == 409 and "COVID" in r.json()["detail"], r.text
        r = import_model(admin, "Bad Name", good)
        assert r.status_code == 422 and "model_name" in r.json()["detail"], r.text
        assert admin.get("/v1/models/other").status_code == 404  # nothing half-registered


def test_warm_start_refusals(stack: Stack, imported: dict, dataset: dict, tmp_path: Path) -> None:
    with stack.client() as admin:
        r = import_model(admin, "covid", artifact_bytes(tmp_path / "covid.pt", classes=["NORMAL", "COVID"]))
        assert r.status_code == 201, r.text
        cases = [
            (job_request(dataset, weights="imagenet"), 422, "not both"),
            (job_request(dataset, backbone="test_efficientnet"), 422, "'test_efficientnet'"),
            (job_request(dataset, init_from={"model": "warmbase", "version": 9}), 404, "has no version 9"),
            (job_request(dataset, init_from={"model": "covid", "version": 1}), 422, "PNEUMONIA"),
            (
                job_request(dataset, init_from={"model": "covid", "version": 1, "class_map": {"PNEUMONIA": "FLU"}}),
                422,
                "FLU",
            ),
            (job_request(dataset, init_from=None), 422, "backbone is required"),
        ]
        for body, code, named in cases:
            r = admin.post("/v1/jobs", json=body)
            assert r.status_code == code and named in r.json()["detail"], (body, r.text)
        r = admin.post("/v1/jobs", json=job_request(dataset, backbone="test_efficientnet"))
        assert "test_resnet" in r.json()["detail"]  # the message names both backbones


def test_job_warm_starts_from_the_imported_version(stack: Stack, imported: dict, dataset: dict) -> None:
    with stack.client() as admin:
        r = admin.post("/v1/jobs", json=job_request(dataset))
        assert r.status_code == 202, r.text
        created = r.json()
        assert created["weights"] == "init:warmbase/v1" and created["pretrained"] and created["warnings"] == []
        assert created["init_from"] == {"model": "warmbase", "version": 1, "class_map": None}
        assert created["spec"]["backbone"] == "test_resnet"  # from the artifact: the request gave none
        job = wait_for(admin, f"/v1/jobs/{created['id']}", {"succeeded", "failed", "cancelled"}, timeout=240)
        assert job["status"] == "succeeded", job
        card = admin.get(f"/v1/models/warmed/versions/{job['model_version']}/card").json()
        sha = imported["source"].removeprefix("imported:")  # the card names the source and its artifact's sha256
        assert card["training"]["warm_start"] == f"warm-started from warmbase v1 (artifact sha256 {sha})", card
        assert card["training"]["weights"] == "init:warmbase/v1" and card["pretrained"] is True
        assert card["training"]["source"] == "trained"
        download = admin.get(f"/v1/models/warmed/versions/{job['model_version']}/artifact")
        assert download.status_code == 200 and download.content[:2] == b"PK"  # a torch zip archive
