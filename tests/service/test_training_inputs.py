"""What a job starts from, over real HTTP: DICOM datasets with labels.csv (no PHI kept),
patient-level splits, registered local weights files, ImageNet weights offline, the report."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.artifact import ClassifierArtifact
from pipelines.synthetic import dicom_bytes, render_cxr
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled"}
SECRET = "PHI-SECRET-"


def dicom_csv_zip(n_patients: int = 24, per_patient: int = 3) -> bytes:
    """Several DICOM images per patient, labels in labels.csv, a mix of encodings and photometrics."""
    rng = np.random.default_rng(5)
    rows = ["file,label,patient_id"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in range(n_patients):
            label = "PNEUMONIA" if p % 2 else "NORMAL"
            for k in range(per_patient):
                name = f"dicom/p{p:03d}_{k}.dcm"
                image = render_cxr(rng, pneumonia=label == "PNEUMONIA", size=96)
                data = dicom_bytes(
                    image,
                    patient_id=f"{SECRET}{p:03d}",
                    photometric="MONOCHROME1" if k % 2 else "MONOCHROME2",
                    bits_stored=16 if p % 3 == 0 else 12,
                    transfer_syntax=("explicit", "rle", "jpeg2000")[k % 3],
                )
                zf.writestr(name, data)
                rows.append(f"{name},{label},{SECRET}{p:03d}")
        zf.writestr("labels.csv", "\n".join(rows) + "\n")
    return buf.getvalue()


@pytest.fixture(scope="module")
def dicom_dataset(stack: Stack) -> dict:
    with stack.client() as client:
        r = client.post("/v1/datasets", files={"file": ("dicom.zip", dicom_csv_zip(), "application/zip")})
        assert r.status_code == 202, r.text
        assert r.json()["layout"] == "csv"
        return wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=180)


def test_dicom_dataset_with_labels_csv(dicom_dataset: dict) -> None:
    assert dicom_dataset["status"] == "ready", dicom_dataset
    report = dicom_dataset["report"]
    assert dicom_dataset["image_count"] == 72 and report["patient_count"] == 24
    mix = report["dicom_mix"]
    assert set(mix["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}
    assert len(mix["transfer_syntaxes"]) == 3


def test_no_patient_identifier_is_kept(stack: Stack, dicom_dataset: dict) -> None:
    """The raw PatientID is in no stored file, no database row and no log line."""
    files = [p for p in stack.data_dir.rglob("*") if p.is_file() and "uploads" not in p.parts]
    assert files
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    for log in stack.logs.iterdir():
        assert SECRET not in log.read_text(errors="replace"), log
    if stack.database_url.startswith("postgresql"):
        name = stack.database_url.rsplit("/", 1)[1]
        dump = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "root", name], capture_output=True, check=True)
        assert SECRET.encode() not in dump.stdout


def test_training_splits_keep_each_patient_in_one_split(stack: Stack, dicom_dataset: dict) -> None:
    from hilum.storage import Storage
    from pipelines.dataset import DatasetVersion

    version = DatasetVersion(Storage(stack.data_dir).dataset_dir(dicom_dataset["id"]))
    data = version.train_data(seed=0)
    patient_of = {r.sample_id: r.patient_key for r in version.rows()}
    names = ("train", "val", "calibration", "test")
    splits = {name: {patient_of[Path(p).stem] for p, _ in getattr(data, name)} for name in names}
    assert splits["train"] and splits["val"] and splits["test"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not splits[a] & splits[b], (a, b)


def ground_truth_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """An 'ImageNet' state dict of test_resnet (3 channels, 1000 classes) written as ops would bring it."""
    import timm

    torch.manual_seed(123)
    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()}
    path = tmp_path / "test_resnet_imagenet.safetensors"
    save_file(state, str(path))
    return path, state


def test_registered_local_weights_are_the_starting_point(stack: Stack, dicom_dataset: dict, tmp_path: Path) -> None:
    path, state = ground_truth_weights(tmp_path)
    with stack.client() as admin:
        with path.open("rb") as fh:
            r = admin.post("/v1/weights", files={"file": (path.name, fh)}, data={"backbone": "test_resnet"})
        assert r.status_code == 201, r.text
        weights = r.json()
        assert weights["backbone"] == "test_resnet" and weights["format"] == "safetensors"
        with path.open("rb") as fh:
            wrong = admin.post("/v1/weights", files={"file": (path.name, fh)}, data={"backbone": "test_efficientnet"})
        assert wrong.status_code == 422, wrong.text
        garbage = admin.post(
            "/v1/weights", files={"file": ("w.pth", b"not a state dict")}, data={"backbone": "test_resnet"}
        )
        assert garbage.status_code == 422
        assert weights["id"] in [w["id"] for w in admin.get("/v1/weights").json()]

        spec = {
            "dataset_id": dicom_dataset["id"],
            "backbone": "test_resnet",
            "strategy": "frozen",
            "epochs": 1,
            "image_size": 64,
            "weights": weights["id"],
            "model_name": "from-local-weights",
        }
        assert admin.post("/v1/jobs", json=spec | {"backbone": "test_efficientnet"}).status_code == 422
        r = admin.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        job = wait_for(admin, f"/v1/jobs/{r.json()['id']}", TERMINAL, timeout=180)
        assert job["status"] == "succeeded", job

        report = admin.get(f"/v1/jobs/{job['id']}/report")
        assert report.status_code == 200
        images = report.json()["images"]
        assert "roc.png" in images
        png = admin.get(images["roc.png"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert admin.get(f"/v1/jobs/{job['id']}/report/..%2Fmodel.pt").status_code == 404

    artifact = ClassifierArtifact.load(stack.data_dir / "models" / "from-local-weights" / "v1" / "model.pt")
    trained = artifact.state_dict
    # frozen backbone: every backbone tensor is the file's; the first conv is timm's RGB -> grey sum
    compared = 0
    for key, value in state.items():
        if key not in trained or key.startswith("fc."):
            continue
        expected = value.sum(dim=1, keepdim=True) if trained[key].shape != value.shape else value
        torch.testing.assert_close(trained[key].float(), expected.float(), msg=key)
        compared += 1
    assert compared > 10


def test_imagenet_weights_offline_fail_the_job_clearly(stack: Stack, dicom_dataset: dict) -> None:
    with stack.client() as client:
        spec = {
            "dataset_id": dicom_dataset["id"],
            "backbone": "test_resnet",
            "strategy": "frozen",
            "epochs": 1,
            "image_size": 64,
            "weights": "imagenet",
        }
        r = client.post("/v1/jobs", json=spec)
        assert r.status_code == 202
        job = wait_for(client, f"/v1/jobs/{r.json()['id']}", TERMINAL, timeout=120)
        assert job["status"] == "failed"
        assert "ImageNet" in job["error"] and "local weights" in job["error"], job["error"]
