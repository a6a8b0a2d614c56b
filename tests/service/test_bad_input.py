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


def test_many_small_zero_members_are_refused_as_a_bomb(stack: Stack) -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(400):  # 400 x 512 KiB of zeros: every member under the per-member threshold
            zf.writestr(f"{'NORMAL' if i % 2 else 'PNEUMONIA'}/{i}.dcm", b"\0" * (512 * 1024))
    with stack.client() as client:
        before = stored_state(stack, client)
        r = upload(client, buf.getvalue())
        assert r.status_code == 422, r.text
        assert "zip bomb" in r.json()["detail"] and "as a whole" in r.json()["detail"]
        assert stored_state(stack, client) == before


def test_long_rejection_list_is_summarised_and_paged(stack: Stack) -> None:
    members = {f"NORMAL/bad{i:03d}.png": b"not an image %d" % i for i in range(130)}
    members |= {f"NORMAL/ok{i}.png": png_bytes(64 + i) for i in range(2)}
    members |= {f"PNEUMONIA/ok{i}.png": png_bytes(80 + i) for i in range(2)}
    with stack.client() as client:
        r = upload(client, zip_bytes(members))
        assert r.status_code == 202, r.text
        dataset = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["status"] == "ready", dataset
        assert len(dataset["rejected"]) == 100 and dataset["rejected_total"] == 130
        assert dataset["rejected_by_reason"] == {"not a PNG, JPEG or DICOM file": 130}
        pages = [
            client.get(f"/v1/datasets/{dataset['id']}/rejections", params={"offset": o, "limit": 50}).json()
            for o in (0, 50, 100)
        ]
        assert [p["total"] for p in pages] == [130, 130, 130]
        assert [len(p["items"]) for p in pages] == [50, 50, 30]
        assert len({i["file"] for p in pages for i in p["items"]}) == 130
        assert client.get("/v1/datasets/nope/rejections").status_code == 404


def test_unknown_label_reaches_ready_with_warnings(stack: Stack) -> None:
    members = {f"covid/{i}.png": png_bytes(100 + i) for i in range(2)}
    members |= {f"Normal /{i}.png": png_bytes(110 + i) for i in range(2)}
    with stack.client() as client:
        r = upload(client, zip_bytes(members))
        assert r.status_code == 202, r.text
        dataset = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["classes"] == ["COVID", "NORMAL"], dataset
        warnings = " ".join(dataset["warnings"])
        assert "COVID" in warnings and "no PNEUMONIA class" in warnings, dataset["warnings"]


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/v1/models/any/predict", None, b"401"),
        ("/v1/models/any/predict/batch", "hk_wrong", b"401"),
        ("/v1/datasets", None, b"401"),
        ("/v1/models/any/predict", "admin", b"413"),
    ],
)
def test_live_api_answers_before_a_huge_body_is_sent(stack: Stack, path: str, key: str | None, status: bytes) -> None:
    """A real uvicorn: 50 GB announced, 5 bytes sent; the answer comes at once and nothing lands on disk."""
    import socket

    def files() -> set[str]:
        return {str(p) for p in stack.data_dir.rglob("*") if p.is_file() and "hilum.db" not in p.name}

    before = files()
    host, port = stack.base_url.rsplit("/", 1)[1].split(":")
    auth = f"Authorization: Bearer {stack.admin_key if key == 'admin' else key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head.encode() + b"--b\r\n")
        answer = sock.recv(4096)  # without the guard this waits for 50 GB and times out
    assert answer.split(b" ", 2)[1] == status, answer[:300]
    assert files() == before
