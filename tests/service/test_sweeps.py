"""Sweeps over real HTTP: a tiny grid runs as ordinary jobs on the Celery worker and its best member
becomes exactly one version; bad sweeps get a 4xx naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.synthetic import write_zip
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def staff_key(stack: Stack) -> str:
    with stack.client() as admin:
        r = admin.post("/v1/keys", json={"name": "sweeps-staff", "role": "staff"})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


@pytest.fixture(scope="module")
def dataset_id(stack: Stack, staff_key: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo synthetic dataset, small."""
    path = write_zip(tmp_path_factory.mktemp("sweep-upload") / "cxr.zip", n_per_class=24, size=64, seed=3)
    with stack.client(staff_key) as staff, Path(path).open("rb") as fh:
        r = staff.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")}, data={"name": "sweep"})
        assert r.status_code == 202, r.text
        ready = wait_for(staff, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
    assert ready["status"] == "ready", ready
    return str(ready["id"])


def sweep_body(dataset: str, **over: object) -> dict:
    body = {
        "dataset_id": dataset,
        "model_name": "sweep-e2e",
        "backbones": ["test_resnet"],
        "strategies": ["frozen", "full"],
        "image_sizes": [32],
        "epochs": 1,
        "batch_size": 16,
        "lr": 3e-2,
    }
    return {**body, **over}


def test_a_tiny_sweep_registers_its_best_member_once(stack: Stack, staff_key: str, dataset_id: str) -> None:
    with stack.client(staff_key) as staff:
        # The training recipe reaches every member like the grid's shared fields do.
        recipe = {"augment": "none", "ema_decay": None, "early_stopping_patience": None, "label_smoothing": 0.0}
        body = sweep_body(dataset_id, **recipe)
        r = staff.post("/v1/sweeps", json=body, headers={"Idempotency-Key": "sweep-e2e-1"})
        assert r.status_code == 202, r.text
        created = r.json()
        assert created["status"] in ("queued", "running") and len(created["members"]) == 2
        again = staff.post("/v1/sweeps", json=body, headers={"Idempotency-Key": "sweep-e2e-1"})
        assert again.json()["id"] == created["id"]  # same key, same sweep

        # Each member is an ordinary job on the queue.
        jobs = {j["id"]: j for j in staff.get("/v1/jobs").json() if j["sweep_id"] == created["id"]}
        assert set(jobs) == {m["job_id"] for m in created["members"]}
        assert {j["spec"]["strategy"] for j in jobs.values()} == {"frozen", "full"}
        assert all({k: j["spec"][k] for k in recipe} == recipe for j in jobs.values())

        sweep = wait_for(staff, f"/v1/sweeps/{created['id']}", ENDED, timeout=300)
        assert sweep["status"] == "succeeded", sweep
        assert [m["config"]["strategy"] for m in sweep["members"]] == ["frozen", "full"]
        assert all(m["status"] == "succeeded" and m["val_auroc"] is not None for m in sweep["members"])
        assert all(m["val_loss"] is not None and m["seconds"] is not None for m in sweep["members"])
        [best] = [m for m in sweep["members"] if m["best"]]
        assert best["job_id"] == sweep["best_job_id"] and sweep["model_version"] == 1

        versions = next(m for m in staff.get("/v1/models").json() if m["name"] == "sweep-e2e")["versions"]
        assert [(v["version"], v["job_id"]) for v in versions] == [(1, best["job_id"])]  # one, from the best
        assert staff.get(f"/v1/jobs/{best['job_id']}").json()["model_version"] == 1
        assert any(s["id"] == created["id"] for s in staff.get("/v1/sweeps").json())
        assert staff.post(f"/v1/sweeps/{created['id']}/cancel").status_code == 409  # it has ended


def test_cancelling_a_sweep_cancels_its_members(stack: Stack, staff_key: str, dataset_id: str) -> None:
    body = sweep_body(dataset_id, model_name="sweep-cancelled", epochs=50, strategies=["full"], image_sizes=[32, 40])
    with stack.client(staff_key) as staff:
        created = staff.post("/v1/sweeps", json=body).json()
        r = staff.post(f"/v1/sweeps/{created['id']}/cancel")
        assert r.status_code == 200, r.text and r.json()["cancel_requested"] is True
        sweep = wait_for(staff, f"/v1/sweeps/{created['id']}", ENDED, timeout=120)
        assert sweep["status"] == "cancelled" and sweep["model_version"] is None
        assert {m["status"] for m in sweep["members"]} == {"cancelled"}
        assert all(m["name"] != "sweep-cancelled" for m in staff.get("/v1/models").json())


@pytest.mark.parametrize(
    ("over", "code", "words"),
    [
        ({"backbones": ["resnet999"]}, 422, "unknown backbone 'resnet999'"),
        ({"dataset_id": "nope"}, 404, "dataset 'nope' not found"),
        ({"epochs": 6, "budget": {"max_total_epochs": 5}}, 422, "the budget allows no member"),
        ({"weights": "not-registered"}, 404, "weights 'not-registered' are not registered"),
        ({"backbones": []}, 422, "backbones"),
        ({"strategies": ["sideways"]}, 422, "strategies"),
        ({"image_sizes": [8]}, 422, "image_sizes"),
        ({"budget": {"max_jobs": 0}}, 422, "max_jobs"),
        ({"budget": {"max_hours": 1}}, 422, "max_hours"),
        ({"augment": "heavy"}, 422, "augment"),
        ({"ema_decay": 1.5}, 422, "ema_decay"),
    ],
)
def test_bad_sweeps_are_refused(
    stack: Stack, staff_key: str, dataset_id: str, over: dict, code: int, words: str
) -> None:
    with stack.client(staff_key) as staff:
        r = staff.post("/v1/sweeps", json=sweep_body(dataset_id, **over))
    assert r.status_code == code, r.text
    assert words in r.json()["detail"]


def test_sweeps_need_staff_and_unknown_ones_are_404(stack: Stack, dataset_id: str) -> None:
    with stack.client() as admin:
        clinician = admin.post("/v1/keys", json={"name": "sweeps-clinician", "role": "clinician"}).json()["key"]
        assert admin.get("/v1/sweeps/unknown").status_code == 404
        assert admin.post("/v1/sweeps/unknown/cancel").status_code == 404
    with stack.client(clinician) as c:
        assert c.post("/v1/sweeps", json=sweep_body(dataset_id)).status_code == 403
        assert c.get("/v1/sweeps").status_code == 403
