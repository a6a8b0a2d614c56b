"""Issue 12 from the command line against a live stack (uvicorn + Celery worker + Redis): a tiny sweep
created with `hilum sweeps create --follow` registers its best member and `hilum sweeps show` lists both;
then a warm-started job with recipe flags, `predict --tta` and `models import` on that version."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.synthetic import render_cxr, write_zip
from tests.cli.conftest import client_env, run_hilum
from tests.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

MODEL = "cli-sweep"


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    with stack.client() as admin:
        r = admin.post("/v1/keys", json={"name": "cli-sweep-staff", "role": "staff"})
        assert r.status_code == 201, r.text
    return client_env(tmp_path_factory.mktemp("xdg-sweep"), url=stack.base_url, key=r.json()["key"])


@pytest.fixture(scope="module")
def dataset_id(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_zip(tmp_path_factory.mktemp("sweep-data") / "cxr.zip", n_per_class=24, size=64, seed=3)
    uploaded = run_hilum("datasets", "upload", str(path), "--name", "cli-sweep", "--json", env=env, timeout=120)
    assert uploaded.returncode == 0, uploaded.stderr
    body = json.loads(uploaded.stdout)
    assert body["status"] == "ready", body
    return str(body["id"])


@pytest.fixture(scope="module")
def created(dataset_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    grid = ["--backbone", "test_resnet", "--strategy", "full", "--image-size", "32", "--image-size", "48"]
    shared = ["--epochs", "1", "--batch-size", "16", "--lr", "3e-2", "--model-name", MODEL, "--max-jobs", "2"]
    # The subprocess timeout is the deadline: --follow must see the sweep end well within it.
    return run_hilum("sweeps", "create", "--dataset", dataset_id, *grid, *shared, "--follow", env=env, timeout=150)


def test_sweeps_create_follow_registers_the_best_member(
    created: subprocess.CompletedProcess[str], env: dict[str, str]
) -> None:
    assert created.returncode == 0, created.stderr + created.stdout
    assert "following sweep" in created.stderr and "member test_resnet full 32 px:" in created.stderr
    assert f"registered: model '{MODEL}' version 1" in created.stdout

    [sweep] = [s for s in json.loads(run_hilum("sweeps", "list", "--json", env=env).stdout) if s["model_name"] == MODEL]
    assert sweep["status"] == "succeeded" and sweep["model_version"] == 1
    assert [m["config"]["image_size"] for m in sweep["members"]] == [32, 48]
    [best] = [m for m in sweep["members"] if m["best"]]

    shown = run_hilum("sweeps", "show", sweep["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    rows = {size: next(line for line in shown.stdout.splitlines() if f"{size} px" in line) for size in (32, 48)}
    assert all("succeeded" in row for row in rows.values())
    assert "*" in rows[best["config"]["image_size"]] and best["job_id"] in rows[best["config"]["image_size"]]
    assert f"registered: model '{MODEL}' version 1" in shown.stdout

    model = json.loads(run_hilum("models", "show", MODEL, "--json", env=env).stdout)
    assert [(v["version"], v["job_id"]) for v in model["versions"]] == [(1, best["job_id"])]
    again = run_hilum("sweeps", "cancel", sweep["id"], env=env)
    assert again.returncode == 7 and "conflict (409)" in again.stderr  # it has ended


def test_warm_start_tta_and_import_against_the_swept_version(
    created: subprocess.CompletedProcess[str],
    dataset_id: str,
    env: dict[str, str],
    stack: Stack,
    tmp_path: Path,
) -> None:
    assert created.returncode == 0, created.stderr
    # A warm start from the sweep's version, with recipe flags: the server takes the body the CLI builds
    # (no backbone, no weights, nulls for --no-ema and --no-early-stopping).
    recipe = ["--augment", "none", "--no-ema", "--no-early-stopping", "--label-smoothing", "0"]
    args = ["--init-from", f"{MODEL}:1", "--strategy", "full", "--epochs", "1", "--batch-size", "16", *recipe]
    job = run_hilum("jobs", "create", "--dataset", dataset_id, *args, "--model-name", "cli-warm", "--follow", env=env)
    assert job.returncode == 0, job.stderr + job.stdout
    assert "random weights" not in job.stderr
    assert f"warm start: {MODEL} v1" in job.stdout and "no EMA" in job.stdout and "no early stopping" in job.stdout
    assert f"weights init:{MODEL}/v1" in job.stdout and "registered: model 'cli-warm' version 1" in job.stdout

    film = tmp_path / "film.png"
    buf = io.BytesIO()
    Image.fromarray((render_cxr(np.random.default_rng(5), pneumonia=True, size=96) * 255).astype("uint8")).save(
        buf, format="PNG"
    )
    film.write_bytes(buf.getvalue())
    [row] = json.loads(
        run_hilum("predict", str(film), "--model", MODEL, "--version", "1", "--tta", "--json", env=env).stdout
    )
    assert row["ok"] and row["prediction"]["tta"] == 5, row
    [row] = json.loads(run_hilum("predict", str(film), "--model", MODEL, "--version", "1", "--json", env=env).stdout)
    assert row["ok"] and row["prediction"]["tta"] is None

    artifact = tmp_path / "model.pt"
    with stack.client() as admin:
        r = admin.get(f"/v1/models/{MODEL}/versions/1/artifact")
        assert r.status_code == 200, r.text
        artifact.write_bytes(r.content)
    staff = run_hilum("models", "import", str(artifact), "--model-name", "cli-imported", env=env)
    assert staff.returncode == 5 and "role may not" in staff.stderr  # admin only
    admin_env = {**env, "HILUM_KEY": stack.admin_key}
    imported = run_hilum("models", "import", str(artifact), "--model-name", "cli-imported", env=admin_env)
    assert imported.returncode == 0, imported.stderr
    assert "imported model.pt as model 'cli-imported' version 1 (imported:" in imported.stdout
    versions = json.loads(run_hilum("models", "show", "cli-imported", "--json", env=env).stdout)["versions"]
    assert [(v["version"], v["source"].split(":")[0], v["job_id"]) for v in versions] == [(1, "imported", None)]
