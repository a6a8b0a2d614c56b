"""Web sign-in over HTTP: the cookie, CSRF, expiry, revocation, and the routes the pages use."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from hilum.db import session_scope
from hilum.tables import WebSession
from pipelines.synthetic import dicom_bytes, render_cxr
from tests.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]


def sign_in(stack: Stack, key: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=stack.base_url, timeout=30)
    r = client.post("/web/session", json={"key": key})
    assert r.status_code == 200, r.text
    return client, r.json()["csrf_token"]


def png(seed: int = 0) -> bytes:
    image = render_cxr(np.random.default_rng(seed), pneumonia=True, size=96)
    buf = io.BytesIO()
    Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_sign_in_sets_a_strict_httponly_cookie_and_stores_only_a_hash(stack: Stack) -> None:
    client = httpx.Client(base_url=stack.base_url)
    r = client.post("/web/session", json={"key": stack.admin_key})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    token = client.cookies["hilum_session"]
    assert r.json()["role"] == "admin" and stack.admin_key not in r.text and token not in r.text
    with session_scope(stack.database_url) as s:
        hashes = list(s.scalars(select(WebSession.token_hash)))
    assert hashes and token not in hashes
    assert client.get("/web/session").json()["signed_in"] is True
    assert client.get("/v1/models").status_code == 200  # the cookie works on the /v1 API


def test_bad_key_and_no_cookie(stack: Stack) -> None:
    assert httpx.post(stack.base_url + "/web/session", json={"key": "hk_nope"}).status_code == 401
    assert httpx.get(stack.base_url + "/web/session").json() == {"signed_in": False}
    other_site = {"Origin": "https://evil.example"}
    r = httpx.post(stack.base_url + "/web/session", json={"key": stack.admin_key}, headers=other_site)
    assert r.status_code == 403


def test_state_changing_requests_need_the_csrf_token(stack: Stack) -> None:
    client, csrf = sign_in(stack, stack.admin_key)
    r = client.post("/v1/keys", json={"name": "no-csrf", "role": "clinician"})
    assert r.status_code == 403 and "CSRF" in r.text  # the guard refuses it (it has a body)
    assert client.post("/v1/jobs/x/cancel").status_code == 403  # no body: the route's own check
    r = client.post("/v1/keys", json={"name": "no-csrf", "role": "clinician"}, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    r = client.post("/v1/keys", json={"name": "with-csrf", "role": "clinician"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    # An upload with no CSRF token is refused before its body is read.
    files = {"file": ("x.zip", b"PK" + b"\0" * 1000, "application/zip")}
    assert client.post("/v1/datasets", files=files).status_code == 403


def test_sign_out_and_expiry_end_the_session(stack: Stack) -> None:
    client, csrf = sign_in(stack, stack.admin_key)
    token = client.cookies["hilum_session"]
    assert client.delete("/web/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.set("hilum_session", token)  # a stolen cookie does not outlive sign-out
    assert client.get("/v1/models").status_code == 401
    client, _ = sign_in(stack, stack.admin_key)
    with session_scope(stack.database_url) as s:
        s.execute(update(WebSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    r = client.get("/v1/models")
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert client.get("/web/session").json() == {"signed_in": False}


def test_revoking_the_key_ends_its_sessions(stack: Stack) -> None:
    with stack.client() as admin:
        created = admin.post("/v1/keys", json={"name": "short-lived", "role": "staff"}).json()
    client, _ = sign_in(stack, created["key"])
    assert client.get("/v1/datasets").status_code == 200
    with stack.client() as admin:
        assert admin.delete(f"/v1/keys/{created['id']}").status_code == 200
    assert client.get("/v1/datasets").status_code == 401


def test_pages_and_assets_are_served_with_a_strict_policy(stack: Stack) -> None:
    r = httpx.get(stack.base_url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/web/static/js/app.js", "/web/static/app.css", "/web/static/js/pages/ask.js"):
        assert httpx.get(stack.base_url + asset).status_code == 200, asset
    assert "http://" not in r.text and "https://" not in r.text  # nothing fetched from elsewhere


def test_preview_and_my_predictions(stack: Stack) -> None:
    with stack.client() as admin:
        created = admin.post("/v1/keys", json={"name": "clin", "role": "clinician"}).json()
    with stack.client(created["key"]) as clin:
        r = clin.post("/v1/preview", files={"file": ("x.png", png())})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        film = Image.open(io.BytesIO(r.content))
        assert film.mode == "L" and film.size == (int(r.headers["x-image-width"]), int(r.headers["x-image-height"]))
        dcm = dicom_bytes(render_cxr(np.random.default_rng(1), pneumonia=False, size=96), photometric="MONOCHROME1")
        assert clin.post("/v1/preview", files={"file": ("x.dcm", dcm)}).headers["x-source-format"] == "dicom"
        noise = np.random.default_rng(0).integers(0, 256, (1400, 1100), dtype=np.uint8)
        big = io.BytesIO()
        Image.fromarray(noise, mode="L").save(big, format="PNG")
        assert len(big.getvalue()) > 2**20  # past the JSON body cap: the guard lets a film through
        r = clin.post("/v1/preview", files={"file": ("big.png", big.getvalue())})
        assert r.status_code == 200, r.text
        assert max(Image.open(io.BytesIO(r.content)).size) == 512  # the canonical size (max_image_side)
        r = clin.post("/v1/preview", files={"file": ("x.txt", b"not an image")})
        assert r.status_code == 422 and "not a PNG, JPEG or DICOM" in r.json()["detail"]
        not_chest = dicom_bytes(render_cxr(np.random.default_rng(1), pneumonia=False, size=96), modality="CT")
        assert clin.post("/v1/preview", files={"file": ("ct.dcm", not_chest)}).status_code == 422
        assert clin.get("/v1/predictions/mine").json() == []
        assert clin.get("/v1/predictions").status_code == 403
