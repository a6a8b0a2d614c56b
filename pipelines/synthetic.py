"""Synthetic chest X-rays for tests, demos and benchmarks.

The images are crude but anatomy-like: a soft-tissue body outline, two dark lung
fields, a bright mediastinum and spine, curved ribs and clavicles, film grain and
a smooth exposure gradient. The ``pneumonia`` class adds patchy bright opacities
inside one lung field (sometimes both), strong enough that a small CNN at 64 px
separates the classes after an epoch or two.

Everything is generated with numpy from a seeded ``Generator``, so datasets are
reproducible; rendering a 256 px image takes well under 10 ms.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

CLASSES = ("NORMAL", "PNEUMONIA")
FORMATS = ("png", "jpeg", "dicom")
_EXT = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a small random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1]."""
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return np.clip((1.0 - d) * 4.0, 0.0, 1.0)


def render_cxr(rng: np.random.Generator, *, pneumonia: bool, size: int = 256) -> np.ndarray:
    """Render one synthetic frontal chest X-ray: float32 (size, size) in [0, 1], bone bright.

    ``pneumonia`` adds 2-5 patchy bright opacities confined to a lung field.
    """
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / s
    jitter = rng.uniform(-0.03, 0.03, size=4).astype(np.float32)
    cx = 0.5 + jitter[0]

    # Body and soft tissue.
    img = 0.08 + 0.30 * _ellipse(yy, xx, 0.62 + jitter[1], cx, 0.62, 0.46)
    # Lung fields: dark, slightly tapered ellipses either side of the midline.
    lung_w = 0.15 + rng.uniform(-0.015, 0.015)
    lung_h = 0.30 + rng.uniform(-0.02, 0.02)
    lung_y = 0.48 + jitter[2]
    lungs = []
    for side in (-1.0, 1.0):
        lx = cx + side * (0.19 + rng.uniform(-0.01, 0.01))
        taper = 1.0 + 0.35 * (yy - lung_y) / lung_h  # wider at the base
        m = _ellipse(yy, xx, lung_y, lx, lung_h, lung_w * np.clip(taper, 0.6, 1.4))
        lungs.append((m, lx))
    lung_mask = np.maximum(lungs[0][0], lungs[1][0])
    img = img - 0.22 * lung_mask

    # Mediastinum and heart (bright, centre, bulging left of the patient = image right).
    img += 0.22 * _ellipse(yy, xx, 0.42, cx, 0.28, 0.065)
    img += 0.18 * _ellipse(yy, xx, 0.62 + jitter[3], cx + 0.05, 0.13, 0.12)
    # Spine: a bright vertical band with vertebral texture.
    spine = np.exp(-(((xx - cx) / 0.028) ** 2)) * (yy > 0.08)
    vertebrae = 0.85 + 0.15 * np.cos(yy * s * 2 * np.pi / max(s / 18.0, 2.0))
    img += 0.20 * spine * vertebrae

    # Ribs: curved bright bands, visible mainly over the lungs.
    phase = rng.uniform(0, 2 * np.pi)
    curve = yy - 0.10 * ((xx - cx) / 0.3) ** 2
    ribs = np.cos(curve * 2 * np.pi * 10.0 + phase) ** 8
    img += 0.10 * ribs * np.clip(lung_mask * 1.3, 0, 1)
    # Clavicles.
    for side in (-1.0, 1.0):
        clav_y = 0.18 + 0.06 * np.abs(xx - cx) / 0.3
        band = np.exp(-(((yy - clav_y) / 0.012) ** 2)) * (side * (xx - cx) > 0.03) * (side * (xx - cx) < 0.32)
        img += 0.16 * band

    if pneumonia:
        n = int(rng.integers(3, 7))
        which = int(rng.integers(0, 2))
        both = rng.random() < 0.3
        texture = np.clip(0.75 + 0.3 * _smooth_noise(rng, size, 12), 0.35, 1.2)
        for i in range(n):
            m, lx = lungs[which if (not both or i % 2 == 0) else 1 - which]
            oy = lung_y + rng.uniform(-0.05, 0.25) * lung_h / 0.3
            ox = lx + rng.uniform(-0.07, 0.07)
            r = rng.uniform(0.06, 0.11)
            blob = np.exp(-(((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * r * r)))
            img += rng.uniform(0.35, 0.5) * blob * m * texture

    # Exposure gradient, film grain and global contrast jitter.
    img += 0.04 * _smooth_noise(rng, size, 4)
    img += rng.normal(0.0, 0.02, size=(size, size)).astype(np.float32)
    gain = rng.uniform(0.85, 1.15)
    img = (img - 0.2) * gain + 0.2 + rng.uniform(-0.03, 0.03)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def write_dicom(path: Path, image01: np.ndarray, **kwargs: Any) -> Path:
    """Write a synthetic DICOM file; see :func:`dicom_bytes` for the options. Returns ``path``."""
    path = Path(path)
    path.write_bytes(dicom_bytes(image01, **kwargs))
    return path


def dicom_bytes(
    image01: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    transfer_syntax: str = "explicit",
    patient_id: str = "P0001",
    modality: str = "CR",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    presentation_lut_shape: str | None = None,
    body_part: str = "CHEST",
    extra_tags: dict[str, str] | None = None,
) -> bytes:
    """Encode a single-frame grayscale DICOM file holding ``image01`` (float in [0, 1], bone bright).

    Stored values span ``0 .. 2**bits_stored - 1``; MONOCHROME1 stores them inverted.
    ``rescale`` is (slope, intercept) written to the header (the stored values are
    unchanged, so the modality values are ``stored * slope + intercept``);
    ``window`` is (center, width) in modality units. ``transfer_syntax`` is
    "explicit", "implicit", "rle", "jpeg2000" (lossless) or "jpeg" (8-bit baseline,
    encoded with Pillow and encapsulated; needs ``bits_stored=8``). ``extra_tags`` sets further
    attributes by keyword (e.g. PatientName, PatientBirthDate, InstitutionName: PHI tests).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    sop_class = {
        "CR": "1.2.840.10008.5.1.4.1.1.1",
        "DX": "1.2.840.10008.5.1.4.1.1.1.1",
        "CT": str(CTImageStorage),
    }.get(modality, "1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture otherwise
    sop_class_uid = UID(sop_class)
    if transfer_syntax == "jpeg":
        bits_stored = 8
    if bits_stored not in (8, 12, 16):
        raise ValueError("bits_stored must be 8, 12 or 16")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")
    top = 2**bits_stored - 1
    values = np.clip(np.asarray(image01, dtype=np.float64), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        values = 1.0 - values
    dtype = np.uint8 if bits_stored == 8 else np.uint16
    stored = np.rint(values * top).astype(dtype)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if transfer_syntax == "implicit" else ExplicitVRLittleEndian
    ds = FileDataset("synthetic.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Synthetic^" + patient_id
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored == 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if presentation_lut_shape:
        ds.PresentationLUTShape = presentation_lut_shape
    for keyword, value in (extra_tags or {}).items():
        setattr(ds, keyword, value)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"

    if transfer_syntax in ("explicit", "implicit"):
        ds.PixelData = stored.tobytes()
    elif transfer_syntax == "rle":
        ds.PixelData = stored.tobytes()
        ds.compress(RLELossless, stored)
    elif transfer_syntax == "jpeg2000":
        ds.PixelData = stored.tobytes()
        ds.compress(JPEG2000Lossless, stored)
    elif transfer_syntax == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(stored, mode="L").save(buf, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(f"unknown transfer_syntax {transfer_syntax!r}")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _encode(image01: np.ndarray, fmt: str) -> bytes:
    u8 = np.rint(np.clip(image01, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(u8, mode="L").save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(u8, mode="L").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _iter_samples(*, n_per_class: int, size: int, fmt: str, seed: int, images_per_patient: int) -> Any:
    """Yield (class, file_stem, image01, dicom_kwargs) for a whole dataset."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    rng = np.random.default_rng(seed)
    per = max(1, images_per_patient)
    for ci, cls in enumerate(CLASSES):
        for i in range(n_per_class):
            patient = f"S{seed:02d}{ci}{i // per:05d}"
            image = render_cxr(rng, pneumonia=cls == "PNEUMONIA", size=size)
            dicom_kwargs = {
                "patient_id": patient,
                "photometric": "MONOCHROME1" if i % 2 else "MONOCHROME2",
                "bits_stored": 16 if (i // 2) % 2 else 12,
                "modality": "DX" if i % 3 == 0 else "CR",
            }
            yield cls, f"{cls.lower()}_{i:05d}", image, dicom_kwargs


def write_dataset(
    out_dir: Path,
    *,
    n_per_class: int = 20,
    size: int = 256,
    fmt: str = "png",
    seed: int = 0,
    images_per_patient: int = 1,
    transfer_syntax: str = "explicit",
) -> Path:
    """Write ``out_dir/NORMAL/*`` and ``out_dir/PNEUMONIA/*`` in ``fmt`` ("png" | "jpeg" | "dicom").

    DICOM files carry a PatientID shared by ``images_per_patient`` consecutive images
    and alternate MONOCHROME1/2, 12/16-bit storage and CR/DX modality, all in
    ``transfer_syntax``. PNG/JPEG carry no patient id (``images_per_patient`` has no
    effect there). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    for cls, stem, image, dkw in _iter_samples(
        n_per_class=n_per_class, size=size, fmt=fmt, seed=seed, images_per_patient=images_per_patient
    ):
        folder = out_dir / cls
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (stem + _EXT[fmt])
        if fmt == "dicom":
            write_dicom(target, image, transfer_syntax=transfer_syntax, **dkw)
        else:
            target.write_bytes(_encode(image, fmt))
    log.info("wrote synthetic dataset: %d images per class, %s, %d px", n_per_class, fmt, size)
    return out_dir


def write_zip(
    out_zip: Path,
    *,
    n_per_class: int = 20,
    size: int = 256,
    fmt: str = "png",
    seed: int = 0,
    images_per_patient: int = 1,
    transfer_syntax: str = "explicit",
    top_folder: str | None = None,
) -> Path:
    """Write a zip of class folders ``NORMAL/...``, ``PNEUMONIA/...`` (optionally under ``top_folder/``)."""
    out_zip = Path(out_zip)
    prefix = f"{top_folder.strip('/')}/" if top_folder else ""
    with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for cls, stem, image, dkw in _iter_samples(
            n_per_class=n_per_class, size=size, fmt=fmt, seed=seed, images_per_patient=images_per_patient
        ):
            name = f"{prefix}{cls}/{stem}{_EXT[fmt]}"
            if fmt == "dicom":
                zf.writestr(name, dicom_bytes(image, transfer_syntax=transfer_syntax, **dkw))
            else:
                zf.writestr(name, _encode(image, fmt), compress_type=zipfile.ZIP_STORED)
    return out_zip
