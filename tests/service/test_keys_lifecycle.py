"""Key lifecycle over real HTTP: expiry, rotation with a grace period, last use, revocation, the audit log."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack
from tests.service.ops import eventually

pytestmark = pytest.mark.e2e


def status_with(stack: Stack, key: str, *, body: bool = False) -> int:
    """A GET (dependency check) or a POST with a body (the ASGI guard's check) with ``key``."""
    with stack.client(key) as client:
        if body:
            return client.post("/v1/jobs", json={"dataset_id": "x"}).status_code
        return client.get("/v1/models").status_code


def test_expiring_key_stops_working(stack: Stack) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=3)
    with stack.client() as admin:
        r = admin.post("/v1/keys", json={"name": "short", "role": "staff", "expires_at": expires.isoformat()})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["active"] and created["expires_at"]
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        assert admin.post("/v1/keys", json={"name": "x", "role": "staff", "expires_at": past}).status_code == 422
    key = created["key"]
    assert status_with(stack, key) == 200
    assert status_with(stack, key, body=True) in (404, 422)  # past the guard: the key is valid
    eventually(lambda: status_with(stack, key) == 401, timeout=20, what="expiry")
    assert status_with(stack, key, body=True) == 401  # the guard honours expiry too
    with stack.client() as admin:
        row = admin.get(f"/v1/keys/{created['id']}").json()
    assert row["active"] is False
    assert row["last_used_at"] is not None


def test_rotation_keeps_the_old_key_for_the_grace_period(stack: Stack) -> None:
    with stack.client() as admin:
        old = admin.post("/v1/keys", json={"name": "ward-9", "role": "clinician"}).json()
        r = admin.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 3})
        assert r.status_code == 201, r.text
        rotated = r.json()
        assert admin.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 3}).status_code == 409
    new = rotated["key"]
    assert new["name"] == "ward-9" and new["role"] == "clinician" and new["key"] != old["key"]
    assert rotated["previous"]["replaced_by"] == new["id"] and rotated["previous"]["expires_at"]
    assert status_with(stack, old["key"]) == 200  # in the grace period both work
    assert status_with(stack, new["key"]) == 200
    eventually(lambda: status_with(stack, old["key"]) == 401, timeout=20, what="end of grace")
    assert status_with(stack, new["key"]) == 200


def test_revocation_and_audit_log(stack: Stack) -> None:
    with stack.client() as admin:
        key = admin.post("/v1/keys", json={"name": "to-revoke", "role": "staff"}).json()
        assert admin.delete(f"/v1/keys/{key['id']}").status_code == 200
        assert status_with(stack, key["key"]) == 401
        events = admin.get("/v1/audit", params={"target": f"key:{key['id']}"}).json()
        assert [e["action"] for e in events] == ["key.revoke", "key.create"]
        assert events[1]["details"]["role"] == "staff"
        assert all(e["actor"] for e in events)
        assert key["key"] not in str(events)  # never a secret in the log
        only_creates = admin.get("/v1/audit", params={"action": "key.create"}).json()
        assert only_creates and {e["action"] for e in only_creates} == {"key.create"}
        r = admin.get("/v1/audit", params={"action": "key."}, headers={"Accept": "text/csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert {"key.create", "key.revoke"} <= {row["action"] for row in rows}
        assert admin.get("/v1/audit", params={"format": "csv"}).text.startswith("id,created_at,actor,action")
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key['key']}"}) as revoked:
        assert revoked.get("/v1/audit").status_code == 401


def test_only_admins_read_the_audit_log(stack: Stack) -> None:
    with stack.client() as admin:
        staff = admin.post("/v1/keys", json={"name": "nosy", "role": "staff"}).json()["key"]
    assert httpx.get(stack.base_url + "/v1/audit", headers={"Authorization": f"Bearer {staff}"}).status_code == 403


def test_weights_registration_is_audited(stack: Stack, tmp_path: Path) -> None:
    import safetensors.torch
    import timm

    path = tmp_path / "test_resnet.safetensors"
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with stack.client() as admin:
        with path.open("rb") as fh:
            r = admin.post("/v1/weights", files={"file": (path.name, fh)}, data={"backbone": "test_resnet"})
        assert r.status_code == 201, r.text
        events = admin.get("/v1/audit", params={"target": f"weights:{r.json()['id']}"}).json()
    assert [e["action"] for e in events] == ["weights.register"]
    assert events[0]["details"]["backbone"] == "test_resnet" and events[0]["actor"]
