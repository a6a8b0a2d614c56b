"""Upload streaming: the byte cap answers 413 and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hilum.settings import Settings
from service.app import create_app

KEY = "hk_upload_test_admin"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(
        _env_file=None,
        env="test",
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:6379/13",
        bootstrap_admin_key=KEY,
        max_upload_bytes=10_000,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_upload_over_the_cap_is_413_and_leaves_no_file(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/datasets", files={"file": ("big.zip", b"x" * 50_000, "application/zip")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert list((tmp_path / "uploads").iterdir()) == []


def test_streamed_upload_without_content_length_is_capped(client: TestClient, tmp_path: Path) -> None:
    boundary = "xyzboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()

    def body():  # chunked transfer: no Content-Length to refuse early
        yield head
        for _ in range(20):
            yield b"y" * 1000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/v1/datasets", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413
    assert list((tmp_path / "uploads").iterdir()) == []


def test_not_multipart_is_415(client: TestClient) -> None:
    r = client.post("/v1/datasets", content=b"PK\x03\x04", headers={"Content-Type": "application/zip"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]


def test_openapi_documents_the_upload(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["file"]["format"] == "binary"
    assert "examples" in str(spec["components"]["schemas"]["JobCreate"])


def test_file_under_another_field_name_says_file_is_missing(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/datasets", files={"upload": ("data.zip", b"PK" + b"z" * 9_000, "application/zip")})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "form field 'file' is missing (got a file in the field 'upload')"
    r = client.post("/v1/datasets", files={"name": (None, "x" * 70_000)})
    assert r.status_code == 422 and "'file'" in r.json()["detail"], r.text
    assert list((tmp_path / "uploads").iterdir()) == []


def test_file_under_another_field_name_is_not_buffered_as_a_field(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, env="test", data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/13", bootstrap_admin_key=KEY
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as c:
        r = c.post("/v1/datasets", files={"upload": ("data.zip", b"PK" + b"z" * 500_000, "application/zip")})
    assert r.status_code == 422 and "form field 'file' is missing" in r.json()["detail"], r.text


def test_duplicate_file_parts_are_refused(client: TestClient, tmp_path: Path) -> None:
    r = client.post(
        "/v1/datasets",
        files=[("file", ("a.zip", b"PK1", "application/zip")), ("file", ("b.zip", b"PK2", "application/zip"))],
    )
    assert r.status_code == 422, r.text
    assert "more than once" in r.json()["detail"]
    assert list((tmp_path / "uploads").iterdir()) == []
