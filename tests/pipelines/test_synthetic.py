"""Synthetic chest X-rays: shape, range, determinism, class signal, writers."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from pipelines.synthetic import Scanner, dicom_bytes, render_cxr, write_dataset, write_dicom, write_zip


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
    t0 = time.process_time()  # CPU time: other processes on a shared CPU don't slow this clock
    for i in range(20):
        render_cxr(rng, pneumonia=bool(i % 2), size=256)
    per_image = (time.process_time() - t0) / 20
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


# --------------------------------------------------------------------------- scanner shift, difficulty, ratio

# Hashes of the default output taken before the scanner shift existed: hundreds of tests train on it.
DEFAULT_RENDER_SHA256 = "d2290956ee1f3bc489f161b17319e81729ccc8ec9af444f800f844e252d68176"
DEFAULT_DATASET_SHA256 = "54bd6c919dbffe4e6d76d578b6d6b9979f3f19dfe3e6ef24c9392b7eafadece8"


def test_default_output_is_byte_identical_to_before_the_shift_options(tmp_path: Path) -> None:
    import hashlib

    h = hashlib.sha256()
    for seed, pneumonia, size in [(0, False, 256), (1, True, 128), (7, True, 64)]:
        h.update(render_cxr(np.random.default_rng(seed), pneumonia=pneumonia, size=size).tobytes())
    assert h.hexdigest() == DEFAULT_RENDER_SHA256
    out = write_dataset(tmp_path / "a", n_per_class=3, size=64, fmt="png", seed=0)
    h = hashlib.sha256()
    for p in sorted(out.rglob("*.png")):
        h.update(p.relative_to(out).as_posix().encode())
        h.update(np.asarray(Image.open(p)).tobytes())
    assert h.hexdigest() == DEFAULT_DATASET_SHA256


def _batch(scanner: Scanner | str | None = None, *, n: int = 16, seed: int = 0, difficulty: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack(
        [render_cxr(rng, pneumonia=bool(i % 2), size=128, scanner=scanner, difficulty=difficulty) for i in range(n)]
    )


def _pixel_noise(imgs: np.ndarray) -> float:
    """Robust sd of horizontal neighbour differences inside the chest (MAD), averaged over films."""
    d = np.diff(imgs[:, 20:100, 20:108], axis=2)
    med = np.median(d, axis=(1, 2), keepdims=True)
    return float(np.mean(np.median(np.abs(d - med), axis=(1, 2)) * 1.4826))


def _sharpness(imgs: np.ndarray) -> float:
    """Mean |Laplacian|: falls when a detector's native resolution is lower."""
    c = imgs[:, 1:-1, 1:-1]
    lap = 4 * c - imgs[:, :-2, 1:-1] - imgs[:, 2:, 1:-1] - imgs[:, 1:-1, :-2] - imgs[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


@pytest.mark.parametrize("name", ["film", "portable", "dr"])
def test_scanner_is_deterministic_per_seed_and_in_range(name: str) -> None:
    a, b, other = _batch(name, n=4, seed=5), _batch(name, n=4, seed=5), _batch(name, n=4, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other)
    assert a.dtype == np.float32 and a.shape == (4, 128, 128) and 0.0 <= a.min() and a.max() <= 1.0
    assert not np.array_equal(a, _batch(None, n=4, seed=5))  # a scanner changes the look


def test_scanners_shift_histogram_noise_and_borders() -> None:
    default, film, portable, dr = (_batch(s) for s in (None, "film", "portable", "dr"))
    # Noise: the low-dose portable is far noisier than the default look.
    assert _pixel_noise(portable) > 1.8 * _pixel_noise(default)
    # Contrast: DR's gamma darkens the mid-tones and spreads the histogram; film's sigmoid curve pushes bone
    # into its shoulder.
    assert np.median(dr) < np.median(default) - 0.05 and dr.std() > 1.1 * default.std()
    inside = (slice(None), slice(30, 98), slice(30, 98))
    assert np.percentile(film[inside], 95) > np.percentile(default[inside], 95) + 0.05
    # Collimation: unexposed film is bright at the edge, a digitally masked border dark.
    assert film[:, 0, :].mean() > 0.8 and portable[:, 0, :].mean() < 0.15
    assert 0.05 < default[:, 0, :].mean() < 0.5


@pytest.mark.parametrize("name", ["film", "portable"])
def test_scanner_native_resolution_lowers_sharpness(name: str) -> None:
    import dataclasses

    from pipelines.synthetic import SCANNERS

    quiet = dataclasses.replace(SCANNERS[name], noise=0.0, grain=0.0)  # noise would dominate the Laplacian
    full = dataclasses.replace(quiet, native=1.0)
    assert quiet.native < 1.0
    assert _sharpness(_batch(quiet, n=8)) < 0.85 * _sharpness(_batch(full, n=8))


def test_difficulty_narrows_the_gap_between_classes() -> None:
    """Subtle pneumonias and dense normal films: "bright in a lung" no longer separates the classes."""
    lungs = (slice(45, 100), slice(20, 108))

    def gap(difficulty: float) -> float:
        rng = np.random.default_rng(1)
        normal = [np.percentile(render_cxr(rng, pneumonia=False, size=128, difficulty=difficulty)[lungs], 95)]
        sick = [np.percentile(render_cxr(rng, pneumonia=True, size=128, difficulty=difficulty)[lungs], 95)]
        for _ in range(29):
            normal.append(np.percentile(render_cxr(rng, pneumonia=False, size=128, difficulty=difficulty)[lungs], 95))
            sick.append(np.percentile(render_cxr(rng, pneumonia=True, size=128, difficulty=difficulty)[lungs], 95))
        return float(np.mean(sick) - np.mean(normal))

    easy, hard = gap(0.0), gap(1.0)
    assert easy > 0.1 and hard < 0.5 * easy


def test_bad_scanner_and_difficulty_are_named() -> None:
    with pytest.raises(ValueError, match="unknown scanner 'ct'.*film, portable, dr"):
        render_cxr(np.random.default_rng(0), pneumonia=False, scanner="ct")
    with pytest.raises(ValueError, match="difficulty must be in"):
        render_cxr(np.random.default_rng(0), pneumonia=False, difficulty=2.0)


@pytest.mark.parametrize(
    "ratio,expected", [(None, (6, 6)), ((1.0, 3.0), (2, 6)), ((3.0, 1.0), (6, 2)), ((1.0, 1.0), (6, 6))]
)
def test_ratio_is_honoured(tmp_path: Path, ratio: tuple[float, float] | None, expected: tuple[int, int]) -> None:
    out = write_dataset(tmp_path / "ds", n_per_class=6, size=32, ratio=ratio, scanner="film", difficulty=0.3)
    assert (len(list((out / "NORMAL").iterdir())), len(list((out / "PNEUMONIA").iterdir()))) == expected


@pytest.mark.parametrize("text", ["1-3", "a:b", "0:3", "1:2:3", ""])
def test_parse_ratio_rejects_bad_text(text: str) -> None:
    from pipelines.synthetic import parse_ratio

    with pytest.raises(ValueError, match="ratio"):
        parse_ratio(text)


def test_synth_cli_writes_a_shifted_imbalanced_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hilum.cli import main

    out = tmp_path / "shifted"
    assert main(["synth", str(out), "--per-class", "6", "--size", "32", "--scanner", "portable", "--ratio", "1:3"]) == 0
    assert len(list((out / "NORMAL").iterdir())) == 2 and len(list((out / "PNEUMONIA").iterdir())) == 6
    assert "scanner portable" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "x"), "--scanner", "ct"]) == 2
    assert "'ct'" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "y"), "--ratio", "1-3"]) == 2
    assert "ratio must look like 1:3" in capsys.readouterr().err


def test_cli_scanner_choices_match_the_presets() -> None:
    from hilum.cli import ScannerName
    from pipelines.synthetic import SCANNER_NAMES

    assert tuple(s.value for s in ScannerName) == SCANNER_NAMES
