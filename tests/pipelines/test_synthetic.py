"""Synthetic chest X-rays: shape, range, determinism, class signal, writers."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from pipelines.synthetic import dicom_bytes, render_cxr, write_dataset, write_dicom, write_zip


def test_render_shape_range_and_determinism() -> None:
    a = render_cxr(np.random.default_rng(3), pneumonia=False, size=128)
    b = render_cxr(np.random.default_rng(3), pneumonia=False, size=128)
    assert a.shape == (128, 128) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert a.std() > 0.05  # not a flat image


def test_anatomy_dark_lungs_bright_spine() -> None:
    img = render_cxr(np.random.default_rng(0), pneumonia=False, size=256)
    spine = img[100:180, 124:132].mean()
    lungs = np.concatenate([img[100:160, 60:90].ravel(), img[100:160, 166:196].ravel()]).mean()
    assert spine > lungs + 0.15


def test_pneumonia_brightens_lung_fields() -> None:
    rng = np.random.default_rng(1)
    lungs = (slice(45, 100), slice(20, 108))  # both lung fields at 128 px
    normal = [np.percentile(render_cxr(rng, pneumonia=False, size=128)[lungs], 95) for _ in range(30)]
    sick = [np.percentile(render_cxr(rng, pneumonia=True, size=128)[lungs], 95) for _ in range(30)]
    # Opacities raise the brightest part of the lung fields.
    assert np.mean(sick) > np.mean(normal) + 0.03


def test_classes_linearly_separable_at_low_resolution() -> None:
    """A proxy for 'a small CNN learns it in an epoch or two': logistic regression on 32 px pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i in range(n):
            y = i % 2
            img = render_cxr(rng, pneumonia=bool(y), size=128)
            small = np.asarray(
                Image.fromarray((img * 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
            )
            xs.append(small.ravel() / 255.0)
            ys.append(y)
        return np.array(xs), np.array(ys)

    x_train, y_train = sample(160)
    x_test, y_test = sample(80)
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(x_train, y_train)
    auc = roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1])
    assert auc > 0.75


def test_render_is_fast() -> None:
    rng = np.random.default_rng(0)
    render_cxr(rng, pneumonia=True)
    t0 = time.perf_counter()
    for i in range(20):
        render_cxr(rng, pneumonia=bool(i % 2), size=256)
    per_image = (time.perf_counter() - t0) / 20
    assert per_image < 0.05  # budget is 10 ms; leave headroom for slow CI machines


@pytest.mark.parametrize("fmt,ext", [("png", ".png"), ("jpeg", ".jpg"), ("dicom", ".dcm")])
def test_write_dataset_layout(tmp_path: Path, fmt: str, ext: str) -> None:
    out = write_dataset(tmp_path / "ds", n_per_class=3, size=64, fmt=fmt)
    assert out == tmp_path / "ds"
    for cls in ("NORMAL", "PNEUMONIA"):
        files = sorted((out / cls).iterdir())
        assert len(files) == 3 and all(f.suffix == ext for f in files)


def test_dicom_dataset_groups_patients_and_mixes_encodings(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "ds", n_per_class=6, size=64, fmt="dicom", images_per_patient=3)
    headers = [pydicom.dcmread(p) for p in sorted(out.rglob("*.dcm"))]
    assert len({h.PatientID for h in headers}) == 4  # 2 patients per class
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(h.BitsStored) for h in headers} == {12, 16}


@pytest.mark.parametrize("ts", ["explicit", "implicit", "rle", "jpeg2000", "jpeg"])
def test_write_dicom_is_valid(tmp_path: Path, ts: str) -> None:
    img = render_cxr(np.random.default_rng(0), pneumonia=False, size=64)
    path = write_dicom(tmp_path / "x.dcm", img, transfer_syntax=ts, patient_id="P9")
    ds = pydicom.dcmread(path)
    assert ds.PatientID == "P9" and ds.Rows == 64 and ds.Columns == 64
    arr = ds.pixel_array
    assert arr.shape == (64, 64)
    top = 255 if ts == "jpeg" else 4095
    if ts != "jpeg":  # lossless: stored values are exactly the scaled image
        np.testing.assert_array_equal(arr, np.rint(img.astype(np.float64) * top))


def test_dicom_bytes_monochrome1_is_inverted() -> None:
    img = render_cxr(np.random.default_rng(0), pneumonia=False, size=64)
    import io

    m1 = pydicom.dcmread(io.BytesIO(dicom_bytes(img, photometric="MONOCHROME1", bits_stored=16))).pixel_array
    m2 = pydicom.dcmread(io.BytesIO(dicom_bytes(img, photometric="MONOCHROME2", bits_stored=16))).pixel_array
    np.testing.assert_array_equal(m1.astype(int) + m2.astype(int), 65535)


def test_write_zip_with_top_folder(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "a.zip", n_per_class=2, size=64, top_folder="mydata")
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
    assert names == [
        "mydata/NORMAL/normal_00000.png",
        "mydata/NORMAL/normal_00001.png",
        "mydata/PNEUMONIA/pneumonia_00000.png",
        "mydata/PNEUMONIA/pneumonia_00001.png",
    ]
