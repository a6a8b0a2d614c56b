"""The client CLI against a live stack (uvicorn + Celery worker + Redis), through the installed `hilum` script:
login, upload, train with --follow, promote and roll back, predict, Ctrl-C on a followed job, error codes."""

from __future__ import annotations

import io
import json
import signal
import stat
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from hilum.client.errors import Exit
from pipelines.synthetic import dicom_bytes, render_cxr, write_zip
from tests.cli.conftest import HILUM, client_env, invoke, run_hilum
from tests.conftest import REPO, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

PER_CLASS = 30
MODEL = "cli-model"
TRAIN = ["--backbone", "test_resnet", "--strategy", "full", "--image-size", "64", "--batch-size", "16"]


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    out = {"admin": stack.admin_key}
    with stack.client() as admin:
        for role in ("staff", "clinician"):
            r = admin.post("/v1/keys", json={"name": f"cli-{role}", "role": role})
            assert r.status_code == 201, r.text
            out[role] = r.json()["key"]
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The staff user's config folder (XDG_CONFIG_HOME): `hilum login` writes here."""
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    """A logged-in user's environment: no HILUM_URL/HILUM_KEY, so the config file is used."""
    return client_env(home)


@pytest.fixture(scope="module")
def login(stack: Stack, keys: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_hilum("login", stack.base_url, "--key", keys["staff"], env=env)


@pytest.fixture(scope="module")
def upload(login: subprocess.CompletedProcess[str], env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = write_zip(tmp_path_factory.mktemp("data") / "cxr.zip", n_per_class=PER_CLASS, size=80, seed=3)
    with zipfile.ZipFile(path, "a") as zf:  # two files ingestion must refuse, with their reasons
        zf.writestr("NORMAL/broken.png", b"this is not a png")
        zf.writestr("PNEUMONIA/notes.png", b"nor is this")
    return run_hilum("datasets", "upload", str(path), "--name", "cli-data", env=env)


@pytest.fixture(scope="module")
def dataset_id(upload: subprocess.CompletedProcess[str], env: dict[str, str]) -> str:
    rows = json.loads(run_hilum("datasets", "list", "--json", env=env).stdout)
    return next(d["id"] for d in rows if d["name"] == "cli-data")


@pytest.fixture(scope="module")
def trained(dataset_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One model version trained with `jobs create --follow` (the module's one real training run)."""
    args = ["jobs", "create", "--dataset", dataset_id, *TRAIN, "--epochs", "2", "--model-name", MODEL, "--lr", "3e-3"]
    return run_hilum(*args, "--follow", env=env, timeout=300)


def test_login_writes_a_private_config_file(
    stack: Stack, keys: dict[str, str], home: Path, env: dict[str, str], login: subprocess.CompletedProcess[str]
) -> None:
    assert login.returncode == 0, login.stderr
    path = home / "hilum" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys["staff"] in path.read_text() and stack.base_url in path.read_text()
    assert json.loads(run_hilum("models", "list", "--json", env=env).stdout) is not None

    # HILUM_KEY overrides the stored key: a bad one is refused (401 -> exit 4)
    bad = invoke("models", "list", env={**env, "HILUM_KEY": "hk_not_a_key"})
    assert bad.exit_code == Exit.UNAUTHORIZED and "key refused" in bad.stderr
    # a refused key is never stored
    again = invoke("login", stack.base_url, "--key", "hk_not_a_key", env=env)
    assert again.exit_code == Exit.UNAUTHORIZED and keys["staff"] in path.read_text()


def test_login_prompts_for_the_key_hidden_and_logout_forgets_it(
    stack: Stack, keys: dict[str, str], tmp_path: Path
) -> None:
    env = client_env(tmp_path)
    result = invoke("login", stack.base_url, env=env, input=keys["clinician"] + "\n")
    assert result.exit_code == 0, result.output
    assert keys["clinician"] not in result.output  # hidden prompt: the key is not echoed
    path = tmp_path / "hilum" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and keys["clinician"] in path.read_text()
    assert invoke("logout", env=env).exit_code == 0 and not path.exists()
    assert invoke("models", "list", env=env).exit_code == Exit.NOT_CONFIGURED


def test_upload_prints_the_report_summary(upload: subprocess.CompletedProcess[str], env: dict[str, str]) -> None:
    assert upload.returncode == 0, upload.stderr
    out = upload.stdout
    assert "ready" in out and f"accepted: {2 * PER_CLASS} images" in out
    assert "NORMAL" in out and "PNEUMONIA" in out and "rejected: 2" in out
    assert "uploading cxr.zip" in upload.stderr  # the byte progress bar


def test_datasets_show_and_list_json(dataset_id: str, env: dict[str, str]) -> None:
    shown = invoke("datasets", "show", dataset_id, "--json", env=env)
    body = json.loads(shown.stdout)
    assert body["status"] == "ready" and body["class_counts"] == {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}
    assert len(body["rejected"]) == 2
    human = invoke("datasets", "show", dataset_id, env=env).stdout
    assert "rejected: 2" in human and " x " in human  # the top reasons


def test_jobs_create_follow_to_success(trained: subprocess.CompletedProcess[str], env: dict[str, str]) -> None:
    assert trained.returncode == 0, trained.stderr + trained.stdout
    assert "succeeded" in trained.stdout and f"registered: model '{MODEL}' version 1" in trained.stdout
    assert "epoch 2/2" in trained.stderr and "val AUROC" in trained.stderr, trained.stderr
    assert "random weights" in trained.stderr  # the --weights none warning
    jobs = json.loads(invoke("jobs", "list", "--json", env=env).stdout)
    job = next(j for j in jobs if j["model_name"] == MODEL)
    assert job["status"] == "succeeded"
    shown = invoke("jobs", "show", job["id"], env=env)
    assert shown.exit_code == 0 and "val: auroc" in shown.stdout


def set_fitness(stack: Stack, version: int, fit: bool, reasons: list[str]) -> None:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE model_versions SET fit_for_use = :fit, fitness_reasons = :reasons "
                    "WHERE model_name = :name AND version = :version"
                ).bindparams(sa.bindparam("reasons", type_=sa.JSON)),
                {"fit": fit, "reasons": reasons, "name": MODEL, "version": version},
            )
    finally:
        engine.dispose()


def test_models_promote_and_rollback(
    trained: subprocess.CompletedProcess[str], dataset_id: str, env: dict[str, str], stack: Stack
) -> None:
    args = ["jobs", "create", "--dataset", dataset_id, *TRAIN, "--epochs", "1", "--model-name", MODEL, "--json"]
    created = json.loads(run_hilum(*args, env=env).stdout)
    followed = run_hilum("jobs", "follow", created["id"], "--json", env=env, timeout=300)
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["model_version"] == 2

    # Tiny models from random weights may or may not pass the registry's fitness check; the CLI is under
    # test here, so the versions' fitness is set the way registration records it (as tests/service do).
    set_fitness(stack, 1, True, [])
    set_fitness(stack, 2, False, ["test: no skill"])
    refused = invoke("models", "promote", MODEL, "2", env=env)
    assert refused.exit_code == Exit.CONFLICT and "not fit for use" in refused.stderr
    assert "v2 is not fit for use: test: no skill" in invoke("models", "show", MODEL, env=env).stdout
    set_fitness(stack, 2, True, [])

    assert "production (none) -> v1" in invoke("models", "promote", MODEL, "1", env=env).stdout
    assert "production v1 -> v2" in invoke("models", "promote", MODEL, "2", env=env).stdout
    rolled = invoke("models", "rollback", MODEL, env=env)
    assert rolled.exit_code == 0 and "production v2 -> v1 (rolled back)" in rolled.stdout
    model = json.loads(invoke("models", "show", MODEL, "--json", env=env).stdout)
    assert model["aliases"] == {"production": 1}
    assert [e["to_version"] for e in model["alias_history"]] == [1, 2, 1]
    listed = invoke("models", "list", env=env).stdout
    assert MODEL in listed and "production v1" in listed


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("films")
    img = render_cxr(np.random.default_rng(11), pneumonia=True, size=96)
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype("uint8")).save(buf, format="PNG")
    paths = {"png": folder / "film.png", "dicom": folder / "film.dcm", "bad": folder / "notes.txt"}
    paths["png"].write_bytes(buf.getvalue())
    paths["dicom"].write_bytes(dicom_bytes(img))
    paths["bad"].write_text("not an image at all")
    return paths


@pytest.fixture(scope="module")
def predicted(
    trained: subprocess.CompletedProcess[str],
    films: dict[str, Path],
    keys: dict[str, str],
    stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    heatmaps = tmp_path_factory.mktemp("heatmaps")
    env = client_env(tmp_path_factory.mktemp("clinician"), url=stack.base_url, key=keys["clinician"])
    files = [str(films[k]) for k in ("png", "dicom", "bad")]
    # An explicit version answers whether or not the registry judged the tiny model fit for use.
    args = ["--model", MODEL, "--version", "1", "--heatmap-dir", str(heatmaps), "--json"]
    return run_hilum("predict", *files, *args, env=env), heatmaps


def test_predict_png_dicom_and_a_bad_file(
    predicted: tuple[subprocess.CompletedProcess[str], Path], films: dict[str, Path], keys: dict[str, str], stack: Stack
) -> None:
    result, _ = predicted
    assert result.returncode == Exit.FAILED, result.stderr  # one file refused
    rows = json.loads(result.stdout)
    assert [r["ok"] for r in rows] == [True, True, False]
    for row in rows[:2]:
        answer = row["prediction"]
        assert answer["model"] == MODEL and answer["label"] in {"NORMAL", "PNEUMONIA"}
        assert "heatmap_png" not in answer  # written to a file instead of printed
    assert "cannot use this file" in rows[2]["error"] and rows[2]["status"] == 422

    env = client_env(REPO, url=stack.base_url, key=keys["clinician"])
    human = run_hilum("predict", str(films["png"]), str(films["bad"]), "--model", MODEL, "--version", "1", env=env)
    assert human.returncode == Exit.FAILED
    assert f"{MODEL} v1" in human.stdout and "refused" in human.stdout and "cannot use this file" in human.stdout
    assert "1 of 2 files refused" in human.stdout


def test_predict_writes_heatmaps(predicted: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, folder = predicted
    rows = json.loads(result.stdout)
    assert any(r.get("heatmap_file") for r in rows), "the server returned no heatmap for heatmap=true"
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["film.dcm.heatmap.png", "film.png.heatmap.png"], written
    for p in folder.iterdir():
        assert Image.open(p).format == "PNG"


def test_error_exit_codes(
    trained: subprocess.CompletedProcess[str], dataset_id: str, keys: dict[str, str], stack: Stack, tmp_path: Path
) -> None:
    clinician = client_env(tmp_path, url=stack.base_url, key=keys["clinician"])
    staff = client_env(tmp_path, url=stack.base_url, key=keys["staff"])
    r = invoke("jobs", "create", "--dataset", dataset_id, *TRAIN, "--epochs", "1", env=clinician)
    assert r.exit_code == Exit.FORBIDDEN and "role may not" in r.stderr
    r = invoke("models", "show", "no-such-model", env=staff)
    assert r.exit_code == Exit.NOT_FOUND and "no-such-model" in r.stderr
    r = invoke("predict", str(tmp_path), "--model", "no-such-model", env=staff)  # a folder: refused locally
    assert r.exit_code == Exit.FAILED
    r = invoke("jobs", "create", "--dataset", dataset_id, "--backbone", "nope", "--epochs", "1", "--json", env=staff)
    assert r.exit_code == Exit.INVALID
    assert "unknown backbone" in json.loads(r.stdout)["error"]["detail"]
    r = invoke("jobs", "show", "no-such-job", "--json", env=staff)
    assert r.exit_code == Exit.NOT_FOUND and json.loads(r.stdout)["error"]["status"] == 404


def test_predict_unknown_model_is_404(
    films: dict[str, Path], keys: dict[str, str], stack: Stack, tmp_path: Path
) -> None:
    env = client_env(tmp_path, url=stack.base_url, key=keys["clinician"])
    result = run_hilum("predict", str(films["png"]), "--model", "no-such-model", env=env)
    assert result.returncode == Exit.NOT_FOUND and "not found (404)" in result.stderr


def _follow_then_interrupt(stack: Stack, env: dict[str, str], dataset_id: str, answer: str) -> tuple[str, int, str]:
    """Start `jobs create --follow` on a long job, press Ctrl-C once it is followed, answer the question."""
    name = f"cli-interrupt-{answer}"
    args = ["jobs", "create", "--dataset", dataset_id, *TRAIN, "--epochs", "300", "--model-name", name, "--follow"]
    proc = subprocess.Popen(
        [str(HILUM), *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("following job" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(answer + "\n")
        proc.stdin.close()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    job_id = next(line.split()[2] for line in lines if line.startswith("following job"))
    return job_id, proc.returncode, "".join(lines)


def test_ctrl_c_asks_and_cancels_or_detaches(
    trained: subprocess.CompletedProcess[str], dataset_id: str, env: dict[str, str], stack: Stack
) -> None:
    job_id, code, err = _follow_then_interrupt(stack, env, dataset_id, "y")
    assert code == Exit.INTERRUPTED and f"Cancel job {job_id}?" in err and "cancel requested" in err
    with stack.client() as admin:
        assert wait_for(admin, f"/v1/jobs/{job_id}", {"cancelled", "failed", "succeeded"}, 60)["status"] == "cancelled"

    job_id, code, err = _follow_then_interrupt(stack, env, dataset_id, "n")
    assert code == Exit.INTERRUPTED and "detached" in err
    with stack.client() as admin:
        assert admin.get(f"/v1/jobs/{job_id}").json()["status"] in {"queued", "running"}  # left alone
    cancelled = run_hilum("jobs", "cancel", job_id, env=env)
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    with stack.client() as admin:
        assert wait_for(admin, f"/v1/jobs/{job_id}", {"cancelled", "failed", "succeeded"}, 60)["status"] == "cancelled"
    again = run_hilum("jobs", "cancel", job_id, env=env)
    assert again.returncode == Exit.CONFLICT and "conflict (409)" in again.stderr
