"""The request guard: the key is checked before any body byte is read, and every body has a cap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from hilum.settings import Settings
from service.app import create_app

KEY = "hk_guard_test_admin_0123456789abcdef"
BOUNDARY = "guardboundary"
MISSING = "missing API key: send 'Authorization: Bearer <key>'"
INVALID = "invalid or revoked API key"


class CountingBody:
    """A chunked multipart body of ``chunks`` x ``chunk`` bytes that counts how much the server pulled."""

    def __init__(self, chunks: int, chunk: int = 1 << 20) -> None:
        self.chunks, self.chunk, self.pulled = chunks, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        self.pulled += 1
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        block = b"\0" * self.chunk
        for _ in range(self.chunks):
            self.pulled += 1
            yield block
        self.pulled += 1
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    @property
    def pulled_bytes(self) -> int:
        return max(0, self.pulled - 1) * self.chunk


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture
def app_and_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        redis_url="redis://127.0.0.1:6379/13",
        bootstrap_admin_key=KEY,
        max_image_bytes=100_000,
        max_batch_bytes=300_000,
        max_upload_bytes=200_000,
        max_json_bytes=10_000,
        rate_limit_enabled=False,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        yield app, client, tmp_path / "data"


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file() and p.name != "hilum.db" and not p.name.startswith("hilum.db-")}


@pytest.mark.parametrize(
    ("headers", "detail"),
    [({}, MISSING), ({"Authorization": "Bearer hk_not_a_key"}, INVALID), ({"Authorization": "Basic abc"}, MISSING)],
    ids=["no-key", "bad-key", "not-bearer"],
)
def test_unauthenticated_50mb_predict_body_is_refused_before_reading(app_and_dir, headers, detail) -> None:  # type: ignore[no-untyped-def]
    _, client, data_dir = app_and_dir
    before = files_under(data_dir)
    body = CountingBody(chunks=50)  # 50 MB, chunked: no Content-Length to refuse it by
    r = client.post("/v1/models/any/predict", content=iter(body), headers=MULTIPART | headers)
    assert r.status_code == 401, r.text
    assert r.json() == {"detail": detail}
    assert r.headers["www-authenticate"] == "Bearer"
    assert body.pulled_bytes == 0, f"the server read {body.pulled_bytes} bytes before checking the key"
    assert files_under(data_dir) == before


def test_401_bodies_match_the_routes_without_a_body(app_and_dir) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = app_and_dir
    for headers, detail in (({}, MISSING), ({"Authorization": "Bearer nope"}, INVALID)):
        plain = client.get("/v1/datasets", headers=headers)
        guarded = client.post("/v1/keys", json={"name": "x", "role": "staff"}, headers=headers)
        assert plain.status_code == guarded.status_code == 401
        assert plain.json() == guarded.json() == {"detail": detail}


def test_every_route_with_a_body_checks_the_key_first(app_and_dir) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = app_and_dir
    checked = 0
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if not template.startswith("/v1/"):
            continue
        for method in {m.upper() for m in operations} & {"POST", "PUT", "PATCH", "DELETE"}:
            path = template.replace("{version}", "1")
            path = "/".join("x" if p.startswith("{") else p for p in path.split("/"))
            body = CountingBody(chunks=4, chunk=1000)
            r = client.request(method, path, content=iter(body), headers=MULTIPART)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert body.pulled_bytes == 0, (method, path)
            checked += 1
    assert checked >= 6


def drive(app, path: str, headers: dict[str, str], body: CountingBody) -> tuple[int, dict, CountingBody]:  # type: ignore[no-untyped-def]
    """POST ``body`` to the ASGI app one chunk per ``receive`` (the TestClient reads a stream whole first)."""
    chunks = iter(body)
    sent: list[dict] = []

    async def receive() -> dict:
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers | {"transfer-encoding": "chunked"}).items()],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload), body


def test_predict_body_past_the_cap_is_413_without_spooling_it(app_and_dir) -> None:  # type: ignore[no-untyped-def]
    app, _, _ = app_and_dir
    for path in ("/v1/models/any/predict", "/v1/models/any/predict/batch", "/v1/datasets"):
        body = CountingBody(chunks=1000, chunk=64 * 1024)  # 64 MB against caps of about 1 MB
        status, payload, _ = drive(app, path, MULTIPART | {"Authorization": f"Bearer {KEY}"}, body)
        assert status == 413, payload
        assert "limit" in payload["detail"]
        assert body.pulled_bytes < 2 << 20, f"{path}: {body.pulled_bytes} bytes read past a cap of about 1 MB"


def test_unauthenticated_chunked_body_is_never_pulled(app_and_dir) -> None:  # type: ignore[no-untyped-def]
    app, _, data_dir = app_and_dir
    before = files_under(data_dir)
    status, payload, body = drive(app, "/v1/models/any/predict/batch", MULTIPART, CountingBody(chunks=50))
    assert (status, payload) == (401, {"detail": MISSING})
    assert body.pulled == 0
    assert files_under(data_dir) == before


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("/v1/models/any/predict", 2_000_000),
        ("/v1/models/any/predict/batch", 2_000_000),
        ("/v1/datasets", 2_000_000),
        ("/v1/keys", 50_000),
    ],
)
def test_declared_length_past_the_cap_is_413_up_front(app_and_dir, path: str, size: int) -> None:  # type: ignore[no-untyped-def]
    _, client, data_dir = app_and_dir
    before = files_under(data_dir)
    r = client.post(
        path,
        content=b"\0" * size,
        headers=MULTIPART | {"Authorization": f"Bearer {KEY}", "Content-Length": str(size)},
    )
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"]
    assert files_under(data_dir) == before


def test_bodies_under_the_cap_pass(app_and_dir) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = app_and_dir
    r = client.post("/v1/keys", json={"name": "ward", "role": "clinician"}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 201, r.text


def test_bodies_outside_v1_are_capped_too(app_and_dir) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = app_and_dir
    r = client.post("/web/session", content=b"{" + b" " * 50_000 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
