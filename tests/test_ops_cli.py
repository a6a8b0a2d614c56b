"""The admin commands of the README's "Command line" table, run as the installed console script on the
server's host: `hilum weights import` (air-gapped sites), `hilum synth` (folders or a zip, PNG/JPEG/DICOM;
also `python -m hilum.synth`), `hilum migrate` and `hilum create-key`."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
import torch
from PIL import Image
from safetensors.torch import save_file

from hilum.db import session_scope
from hilum.keys import find_active_key, hash_key
from hilum.tables import WeightsFile
from models.artifact import ClassifierArtifact
from pipelines.synthetic import write_zip
from tests.conftest import REPO, Stack, wait_for

HILUM = Path(sys.executable).with_name("hilum")
TERMINAL = {"succeeded", "failed", "cancelled"}


def hilum(*args: str, env: Mapping[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The installed console script (``.venv/bin/hilum``), as an operator runs it."""
    assert HILUM.exists(), f"{HILUM} is not installed: pip install -e ."
    return subprocess.run([str(HILUM), *args], env=dict(env), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def host_env(tmp_path: Path) -> dict[str, str]:
    """A server host's settings: its own data dir and SQLite database, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_")}
    env.update(
        HILUM_DATA_DIR=str(tmp_path / "var"),
        HILUM_DATABASE_URL=f"sqlite:///{tmp_path / 'hilum.db'}",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return env


def imagenet_file(path: Path, backbone: str = "test_resnet") -> dict[str, torch.Tensor]:
    """An 'ImageNet' state dict (3 channels, 1000 classes) as an operator would bring it; written to ``path``."""
    import timm

    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model(backbone, pretrained=False).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.e2e
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)  # one training job is enough: the CLI's SQL is shared
def test_weights_import_registers_a_file_that_a_job_starts_from(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "test_resnet_imagenet.safetensors"
    state = imagenet_file(path)
    result = hilum("weights", "import", str(path), "--backbone", "test_resnet", env=stack.env)
    assert result.returncode == 0, result.stderr
    found = re.search(r"weights id (\w+)", result.stdout)
    assert found, result.stdout
    weights_id = found.group(1)
    with session_scope(stack.database_url) as session:
        row = session.get(WeightsFile, weights_id)
        assert row is not None and row.backbone == "test_resnet" and row.format == "safetensors"
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (stack.data_dir / row.path).read_bytes() == path.read_bytes()  # a copy in the data dir

    with stack.client() as admin:
        assert weights_id in [w["id"] for w in admin.get("/v1/weights").json()]
        with write_zip(tmp_path / "cxr.zip", n_per_class=16, size=64, seed=3).open("rb") as fh:
            r = admin.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")})
        assert r.status_code == 202, r.text
        dataset = wait_for(admin, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["status"] == "ready", dataset
        spec = {"backbone": "test_resnet", "strategy": "frozen", "epochs": 1, "image_size": 32, "batch_size": 16}
        r = admin.post(
            "/v1/jobs",
            json=spec | {"dataset_id": dataset["id"], "weights": weights_id, "model_name": "from-cli-weights"},
        )
        assert r.status_code == 202, r.text
        job = wait_for(admin, f"/v1/jobs/{r.json()['id']}", TERMINAL, timeout=180)
        assert job["status"] == "succeeded", job
        assert job["pretrained"] is True and job["warnings"] == []

    # The frozen backbone is the imported file's (the first conv summed over RGB, the 1000-class head dropped).
    trained = ClassifierArtifact.load(stack.data_dir / "models" / "from-cli-weights" / "v1" / "model.pt").state_dict
    compared = 0
    for key, value in state.items():
        if key in trained and not key.startswith("fc."):
            expected = value.sum(dim=1, keepdim=True) if trained[key].shape != value.shape else value
            torch.testing.assert_close(trained[key].float(), expected.float(), msg=key)
            compared += 1
    assert compared > 10


def test_weights_import_refuses_bad_files_with_a_clear_message(tmp_path: Path) -> None:
    env = host_env(tmp_path)
    garbage = tmp_path / "junk.pth"
    garbage.write_bytes(b"not a state dict")
    cases = [  # (another architecture's weights: tests/models/test_weights.py, the same ValueError path)
        (garbage, "test_resnet", "junk.pth"),  # the operator's file named, not the stored copy
        (tmp_path / "missing.safetensors", "test_resnet", "missing.safetensors"),
    ]
    for path, backbone, words in cases:
        result = hilum("weights", "import", str(path), "--backbone", backbone, env=env)
        assert result.returncode not in (0, None), (path, result.stdout)
        assert words in result.stderr and "Traceback" not in result.stderr, (path, result.stderr)
    engine = sa.create_engine(env["HILUM_DATABASE_URL"])
    with engine.connect() as conn:  # nothing registered, no file left behind
        assert conn.execute(sa.text("SELECT count(*) FROM weights_files")).scalar() == 0
    engine.dispose()
    assert not list((tmp_path / "var").glob("weights/*"))


def test_synth_writes_class_folders_and_zips(tmp_path: Path) -> None:
    env = host_env(tmp_path)
    out = tmp_path / "dicom"
    result = hilum(
        "synth", str(out), "--per-class", "4", "--size", "64", "--format", "dicom", "--images-per-patient", "2", env=env
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["NORMAL", "PNEUMONIA"]
    for cls in ("NORMAL", "PNEUMONIA"):
        files = sorted((out / cls).iterdir())
        assert len(files) == 4 and all(f.suffix == ".dcm" for f in files)
        headers = [pydicom.dcmread(f) for f in files]
        assert all((ds.Rows, ds.Columns) == (64, 64) and ds.Modality in {"CR", "DX"} for ds in headers)
        assert len({ds.PatientID for ds in headers}) == 2  # two images per patient
        assert headers[0].pixel_array.shape == (64, 64)

    archive = tmp_path / "demo.zip"
    result = hilum("synth", str(archive), "--per-class", "3", "--size", "48", env=env)  # PNG by default
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert sorted({n.split("/")[0] for n in names}) == ["NORMAL", "PNEUMONIA"] and len(names) == 6
        image = Image.open(io.BytesIO(zf.read(names[0])))
        assert (image.format, image.mode, image.size) == ("PNG", "L", (48, 48))

    # The README's demo form: `python -m hilum.synth OUT --per-class N --size S`.
    jpegs = tmp_path / "jpeg"
    module = subprocess.run(
        [sys.executable, "-m", "hilum.synth", str(jpegs), "--per-class", "2", "--size", "40", "--format", "jpeg"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert module.returncode == 0, module.stderr
    files = sorted(jpegs.rglob("*.jpg")) + sorted(jpegs.rglob("*.jpeg"))
    assert len(files) == 4
    assert np.asarray(Image.open(files[0])).shape == (40, 40)


def test_migrate_then_create_key_stores_only_its_hash(tmp_path: Path) -> None:
    env = host_env(tmp_path)
    for _ in range(2):  # applying the migrations twice is a no-op
        result = hilum("migrate", env=env)
        assert result.returncode == 0, result.stderr
    engine = sa.create_engine(env["HILUM_DATABASE_URL"])
    tables = set(sa.inspect(engine).get_table_names())
    assert {"api_keys", "datasets", "jobs", "model_versions", "weights_files", "alembic_version"} <= tables
    engine.dispose()

    result = hilum("create-key", "--name", "night-ops", "--role", "clinician", env=env)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("hk_")
    with session_scope(env["HILUM_DATABASE_URL"]) as session:
        row = find_active_key(session, key)
        assert row is not None and (row.name, row.role, row.key_hash) == ("night-ops", "clinician", hash_key(key))
    assert key.encode() not in Path(tmp_path / "hilum.db").read_bytes()
