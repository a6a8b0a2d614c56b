"""Labels over HTTP: declared classes at upload, and a model name keeps one class list across versions."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hilum.db import session_scope
from hilum.settings import Settings
from hilum.tables import Dataset, Job, ModelVersion
from service.app import create_app
from tests.pipelines.test_ingest import png

KEY = "hk_labels_test_admin_0123456789abcd"


@pytest.fixture
def app_client(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        redis_url="redis://127.0.0.1:6379/13",
        bootstrap_admin_key=KEY,
        rate_limit_enabled=False,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield settings, client


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_upload_breaking_its_declared_classes_is_refused(app_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, client = app_client
    content = zip_of({"COVID/a.png": png(0), "NORMAL/b.png": png(2), "PNEUMONIA/c.png": png(1)})
    r = client.post(
        "/v1/datasets", files={"file": ("d.zip", content, "application/zip"), "classes": (None, "normal, pneumonia")}
    )
    assert r.status_code == 422, r.text
    assert "COVID" in r.json()["detail"] and "declared classes NORMAL, PNEUMONIA" in r.json()["detail"]
    assert list((tmp_path / "data" / "uploads").iterdir()) == []
    r = client.post("/v1/datasets", files={"file": ("d.zip", content, "application/zip"), "classes": (None, "x")})
    assert r.status_code == 422 and "at least two classes" in r.json()["detail"]


def test_a_model_name_keeps_its_class_list(app_client) -> None:  # type: ignore[no-untyped-def]
    settings, client = app_client
    with session_scope(settings.resolved_database_url) as session:
        old = Dataset(id="dsold", name="old", status="ready", classes=["NORMAL", "PNEUMONIA"])
        new = Dataset(id="dsnew", name="new", status="ready", classes=["COVID", "NORMAL"])
        session.add_all([old, new])
        session.flush()
        job = Job(id="jobold", dataset_id="dsold", status="succeeded", spec={}, model_name="pneumonia")
        session.add(job)
        session.flush()
        session.add(
            ModelVersion(
                model_name="pneumonia",
                version=1,
                job_id="jobold",
                dataset_id="dsold",
                backbone="test_resnet",
                artifact_path="models/pneumonia/v1/model.pt",
                class_names=["NORMAL", "PNEUMONIA"],
            )
        )
    body = {"dataset_id": "dsnew", "backbone": "test_resnet", "strategy": "full", "epochs": 1}
    r = client.post("/v1/jobs", json=body | {"model_name": "pneumonia"})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "NORMAL, PNEUMONIA" in detail and "COVID, NORMAL" in detail and "pneumonia" in detail
