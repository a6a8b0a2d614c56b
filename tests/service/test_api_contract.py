"""The API's contract on bad input: no 500s, UTC timestamps with an offset, one error body shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hilum.settings import Settings
from service.app import create_app

KEY = "hk_contract_test_admin_0123456789ab"
BIG = 2**63  # past every database integer type


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        redis_url="redis://127.0.0.1:6379/13",
        bootstrap_admin_key=KEY,
        rate_limit_enabled=False,
    )
    with TestClient(
        create_app(settings), headers={"Authorization": f"Bearer {KEY}"}, raise_server_exceptions=False
    ) as c:
        yield c


@pytest.mark.parametrize(
    "body",
    [
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\nPK\r\n--b',  # no end
        b"garbage without any boundary",
        b"--b\r\nno headers here\r\n\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; name="file"\r\nX: ' + b"y" * 100_000 + b"\r\n\r\n--b--\r\n",
    ],
    ids=["unterminated", "no-boundary", "bad-part-headers", "huge-header"],
)
def test_malformed_multipart_upload_is_a_4xx(client: TestClient, body: bytes) -> None:
    r = client.post("/v1/datasets", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert isinstance(r.json()["detail"], str)


@pytest.mark.parametrize("what", ["card", "onnx", "artifact"])
def test_version_past_the_integer_range_is_a_4xx(client: TestClient, what: str) -> None:
    r = client.get(f"/v1/models/m/versions/{BIG}/{what}")
    assert r.status_code in (404, 422), (r.status_code, r.text)
    r = client.get(f"/v1/models/m/versions/{2**31 - 1}/{what}")
    assert r.status_code == 404, (r.status_code, r.text)


def test_predict_version_past_the_integer_range_is_a_4xx(client: TestClient) -> None:
    r = client.post(f"/v1/models/m/predict?version={BIG}", files={"file": ("x.png", b"x", "image/png")})
    assert r.status_code in (404, 422), (r.status_code, r.text)


def test_timestamps_are_utc_with_an_offset_on_create_and_read(client: TestClient) -> None:
    created = client.post("/v1/keys", json={"name": "ward", "role": "clinician"})
    assert created.status_code == 201, created.text
    assert created.json()["created_at"].endswith("Z")
    listed = client.get("/v1/keys").json()
    assert listed and all(k["created_at"].endswith("Z") for k in listed), listed


def test_every_422_detail_is_a_string_with_the_field_errors_beside_it(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"dataset_id": "x", "epochs": "many"})
    assert r.status_code == 422
    body = r.json()
    assert isinstance(body["detail"], str) and "epochs" in body["detail"]
    assert any(e["loc"][-1] == "epochs" for e in body["errors"])
    assert "input" not in str(body["errors"])
    r = client.get("/v1/predictions", params={"limit": 0})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


def test_error_answers_are_documented_on_every_v1_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(spec["paths"]), "a 422 still documented as FastAPI's list-shaped default"
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in operations.items():
            for code in ("401", "403", "404", "409", "413", "422", "429"):
                assert code in op["responses"], (method, path, code)
                schema = op["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code, schema)


def test_huge_image_in_a_small_file_is_refused_before_decoding(client: TestClient) -> None:
    from tests.pipelines.test_imaging import huge_png

    r = client.post("/v1/preview", files={"file": ("bomb.png", huge_png(9990, 9990), "image/png")})
    assert r.status_code == 422, r.text
    assert "9990x9990 pixels" in r.json()["detail"] and "megapixels" in r.json()["detail"]


def test_clinicians_may_not_take_weights_or_read_histories(client: TestClient) -> None:
    """The README's role table: clinicians read and predict, but get 403 on downloads and histories."""
    key = client.post("/v1/keys", json={"name": "ward", "role": "clinician"}).json()["key"]
    as_clinician = {"Authorization": f"Bearer {key}"}
    for path in (
        "/v1/models/m/versions/1/artifact",
        "/v1/models/m/versions/1/onnx",
        "/v1/models/m/aliases/history",
        "/v1/models/m/versions/1/threshold/history",
    ):
        r = client.get(path, headers=as_clinician)
        assert r.status_code == 403, (path, r.status_code)
    for path in ("/v1/models/m", "/v1/models/m/versions/1/card", "/v1/models/m/versions/1/threshold"):
        assert client.get(path, headers=as_clinician).status_code == 404, path  # allowed; the model is unknown
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "download a version's artifact or ONNX export; alias history; threshold history" in readme
