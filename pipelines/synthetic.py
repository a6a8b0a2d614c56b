"""Synthetic chest X-rays for tests, demos and benchmarks.

The images are crude but anatomy-like: a soft-tissue body outline, two dark lung
fields, a bright mediastinum and spine, curved ribs and clavicles, film grain and
a smooth exposure gradient. The ``pneumonia`` class adds patchy bright opacities
inside one lung field (sometimes both), strong enough that a small CNN at 64 px
separates the classes after an epoch or two.

``scanner`` (presets in ``SCANNERS``) renders the same anatomy as another site would: its response curve,
noise, native resolution, collimation and marker, and its patient mix. ``difficulty`` adds subtle
pneumonias and dense normal regions in either class, so "bright in a lung" stops separating them. Neither
changes the default output, draw for draw.

Everything is generated with numpy from a seeded ``Generator``, so datasets are
reproducible; rendering a 256 px image takes well under 10 ms.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Scanner:
    """How one site's machine and patient mix turn the same anatomy into a film (``SCANNERS`` holds presets).

    The response chain runs exposure -> native resolution -> window -> film (H&D) curve -> gamma -> edge
    enhancement -> noise and grain -> collimation border and lead marker. The patient mix sets thorax size,
    position and rotation, and the share of subtle pneumonias and of films with dense but normal regions.
    """

    name: str
    window: tuple[float, float] = (0.0, 1.0)  # exposure range mapped to [0, 1]
    gamma: float = 1.0  # > 1 darker mid-tones, higher contrast in the lungs
    film: float = 0.0  # slope of a film's sigmoid characteristic curve; 0 is a linear digital response
    fog: float = 0.0  # film base plus fog: the darkest the film gets
    sharpen: float = 0.0  # unsharp-mask gain of digital post-processing
    heel: float = 0.0  # exposure ramp from top to bottom (anode heel effect)
    noise: float = 0.02  # white (quantum) noise sd
    grain: float = 0.0  # amplitude of correlated grain
    native: float = 1.0  # native resolution as a share of the output size (rendered small, upsampled)
    collimation: float = 0.0  # widest collimation border, as a share of the side
    border: float = 0.0  # grey level of that border: bright on film (unexposed), dark where masked digitally
    marker: bool = False  # a bright lead side marker in a top corner
    scale: tuple[float, float] = (1.0, 1.0)  # thorax size
    offset: float = 0.0  # thorax off-centre, as a share of the side
    rotation: float = 0.0  # degrees, either way
    subtle: float = 0.0  # share of pneumonias with small faint opacities
    confounders: float = 0.0  # share of films (either class) with dense but normal regions


SCANNERS: dict[str, Scanner] = {
    # Older film/CR room: sigmoid film curve with fog, coarse grain, half resolution, bright collimation edges.
    "film": Scanner(
        name="film",
        window=(0.02, 0.85),
        film=7.0,
        fog=0.1,
        heel=0.08,
        noise=0.015,
        grain=0.06,
        native=0.5,
        collimation=0.1,
        border=0.92,
        marker=True,
        scale=(0.85, 1.05),
        offset=0.05,
        rotation=6.0,
        subtle=0.15,
        confounders=0.25,
    ),
    # Bedside AP portable: low dose (noisy), flat contrast, low resolution, small off-centre rotated patients.
    "portable": Scanner(
        name="portable",
        window=(0.08, 0.75),
        gamma=0.75,
        heel=0.12,
        noise=0.06,
        grain=0.02,
        native=0.35,
        collimation=0.14,
        border=0.03,
        marker=True,
        scale=(0.7, 0.95),
        offset=0.08,
        rotation=10.0,
        subtle=0.2,
        confounders=0.35,
    ),
    # Modern DR: high-contrast curve with strong edge enhancement, little noise, larger patients.
    "dr": Scanner(
        name="dr",
        window=(0.0, 0.85),
        gamma=1.45,
        sharpen=1.2,
        noise=0.008,
        collimation=0.05,
        border=0.0,
        scale=(0.95, 1.15),
        offset=0.03,
        rotation=3.0,
        subtle=0.15,
        confounders=0.25,
    ),
}
SCANNER_NAMES = tuple(SCANNERS)


def scanner_named(name: str | Scanner | None) -> Scanner | None:
    """A preset by name (None stays None: the default look); ValueError naming the presets otherwise."""
    if name is None or isinstance(name, Scanner):
        return name
    if name not in SCANNERS:
        raise ValueError(f"unknown scanner {name!r}; use one of {', '.join(SCANNER_NAMES)}")
    return SCANNERS[name]


def parse_ratio(text: str) -> tuple[float, float]:
    """ "1:3" -> (1.0, 3.0): the NORMAL:PNEUMONIA proportion; ValueError for anything else."""
    parts = text.split(":")
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"ratio must look like 1:3 (NORMAL:PNEUMONIA), got {text!r}") from None
    if not (a > 0 and b > 0):
        raise ValueError(f"both sides of the ratio must be positive, got {text!r}")
    return a, b


def class_counts(n_per_class: int, ratio: tuple[float, float] | None) -> dict[str, int]:
    """Films per class: ``n_per_class`` each, or with ``ratio`` the larger class gets ``n_per_class``."""
    if ratio is None:
        return {cls: n_per_class for cls in CLASSES}
    top = max(ratio)
    return {cls: max(1, round(n_per_class * r / top)) for cls, r in zip(CLASSES, ratio, strict=True)}


def _anatomy(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, s: float) -> tuple[np.ndarray, dict]:
    """Body, lungs, mediastinum, spine, ribs and clavicles on the grid (yy, xx); returns (image, lung geometry)."""
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
    return img, {"lungs": lungs, "lung_y": lung_y, "lung_h": lung_h, "lung_w": lung_w, "cx": cx}


def _opacities(
    rng: np.random.Generator,
    img: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    geo: dict,
    *,
    count: tuple[int, int] = (3, 7),
    radius: tuple[float, float] = (0.06, 0.11),
    strength: tuple[float, float] = (0.35, 0.5),
) -> np.ndarray:
    """Patchy bright opacities confined to one lung field (sometimes both); defaults are the classic look."""
    size = yy.shape[0]
    lungs, lung_y, lung_h = geo["lungs"], geo["lung_y"], geo["lung_h"]
    n = int(rng.integers(*count))
    which = int(rng.integers(0, 2))
    both = rng.random() < 0.3
    texture = np.clip(0.75 + 0.3 * _smooth_noise(rng, size, 12), 0.35, 1.2)
    for i in range(n):
        m, lx = lungs[which if (not both or i % 2 == 0) else 1 - which]
        oy = lung_y + rng.uniform(-0.05, 0.25) * lung_h / 0.3
        ox = lx + rng.uniform(-0.07, 0.07)
        r = rng.uniform(*radius)
        blob = np.exp(-(((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * r * r)))
        img += rng.uniform(*strength) * blob * m * texture
    return img


def _confounders(rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray, geo: dict) -> np.ndarray:
    """Dense but normal findings that a shortcut ("anything bright in a lung") mistakes for pneumonia."""
    lungs, lung_y, lung_h, cx = geo["lungs"], geo["lung_y"], geo["lung_h"], geo["cx"]
    kinds = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
    for kind in kinds:
        if kind == 0:  # breast / pectoral soft tissue over both lung bases: smooth, symmetric
            for m, lx in lungs:
                shadow = _ellipse(yy, xx, lung_y + 0.7 * lung_h, lx, 0.16, 0.14)
                img += rng.uniform(0.1, 0.2) * shadow * np.clip(m * 1.5, 0, 1)
        elif kind == 1:  # prominent hilar vessels: bright smooth blobs beside the mediastinum, both sides
            for side in (-1.0, 1.0):
                r = rng.uniform(0.03, 0.05)
                hy, hx = lung_y + rng.uniform(-0.05, 0.05), cx + side * rng.uniform(0.09, 0.12)
                img += rng.uniform(0.15, 0.28) * np.exp(-(((yy - hy) ** 2 + (xx - hx) ** 2) / (2 * r * r)))
        elif kind == 2:  # calcified granulomas: 1-3 small very dense dots inside a lung
            for _ in range(int(rng.integers(1, 4))):
                m, lx = lungs[int(rng.integers(0, 2))]
                gy, gx = lung_y + rng.uniform(-0.6, 0.6) * lung_h, lx + rng.uniform(-0.08, 0.08)
                r = rng.uniform(0.008, 0.016)
                img += rng.uniform(0.3, 0.5) * np.exp(-(((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * r * r))) * m
        else:  # monitoring leads: a bright wire across the chest ending in an electrode
            y0, x0 = rng.uniform(0.25, 0.7), rng.uniform(0.15, 0.85)
            bend = rng.uniform(-0.3, 0.3)
            wire = np.exp(-(((yy - y0 - bend * (xx - x0) ** 2 * 4) / 0.004) ** 2)) * (np.abs(xx - x0) < 0.25)
            img += 0.35 * wire + 0.4 * _ellipse(yy, xx, y0, x0, 0.018, 0.018)
    return img


def _patient_grid(rng: np.random.Generator, size: int, sc: Scanner | None) -> tuple[np.ndarray, np.ndarray]:
    """Sampling grid in [0, 1] units, scaled, shifted and rotated about the centre by the scanner's patient mix."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / float(size)
    if sc is None:
        return yy, xx
    scale = rng.uniform(*sc.scale)
    dy, dx = rng.uniform(-sc.offset, sc.offset, size=2)
    angle = np.deg2rad(rng.uniform(-sc.rotation, sc.rotation))
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    y, x = yy - 0.5 - dy, xx - 0.5 - dx
    return (cos * y - sin * x) / scale + 0.5, (sin * y + cos * x) / scale + 0.5


def _resample(img: np.ndarray, share: float) -> np.ndarray:
    """Down to ``share`` of the side (area average) and back up bilinearly: a detector of lower native resolution."""
    size = img.shape[0]
    small = max(8, round(size * share))
    pil = Image.fromarray(img.astype(np.float32), mode="F").resize((small, small), Image.Resampling.BOX)
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edges reflected), in numpy: the low-pass of an unsharp mask."""
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    out = img.astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        n = out.shape[axis]
        out = sum(w * padded.take(np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def _scanner_response(rng: np.random.Generator, img: np.ndarray, sc: Scanner) -> np.ndarray:
    """Exposure, detector and post-processing of one scanner, then its collimation border and marker."""
    size = img.shape[0]
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32) / float(size)
    img = img + 0.04 * _smooth_noise(rng, size, 4) + sc.heel * (yy - 0.5)
    img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.03)  # exposure control varies film to film
    if sc.native < 1.0:
        img = _resample(img, sc.native)
    lo, hi = sc.window
    x = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    if sc.film > 0:  # H&D curve: toe and shoulder compress the extremes; fog lifts the darkest film
        curve = 1.0 / (1.0 + np.exp(-sc.film * (x - 0.5)))
        ends = 1.0 / (1.0 + np.exp(-sc.film * np.array([-0.5, 0.5])))
        x = sc.fog + (1.0 - sc.fog) * (curve - ends[0]) / (ends[1] - ends[0])
    x = x**sc.gamma
    if sc.sharpen > 0:
        x = x + sc.sharpen * (x - _blur(x, max(1.0, size / 64)))
    x = x + rng.normal(0.0, sc.noise, size=(size, size))
    if sc.grain > 0:
        x = x + sc.grain * _smooth_noise(rng, size, max(4, size // 3))
    if sc.collimation > 0:
        top, bottom, left, right = (rng.uniform(0.2, 1.0, size=4) * sc.collimation * size).astype(int)
        inside = np.zeros((size, size), dtype=bool)
        inside[top : size - bottom, left : size - right] = True
        x = np.where(inside, x, sc.border + rng.normal(0.0, 0.01, size=(size, size)))
    if sc.marker:
        m = max(3, size // 24)
        r0, c0 = size // 16 + _jitter_px(rng, size), size - size // 16 - 2 * m - _jitter_px(rng, size)
        x[r0 : r0 + 2 * m, c0 : c0 + m // 2 + 1] = 0.97  # an "L": upright stroke and foot
        x[r0 + 2 * m - m // 2 - 1 : r0 + 2 * m, c0 : c0 + m + m // 2] = 0.97
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _jitter_px(rng: np.random.Generator, size: int) -> int:
    """A marker's placement varies by a few pixels from film to film."""
    return int(rng.integers(0, max(1, size // 20)))


def render_cxr(
    rng: np.random.Generator,
    *,
    pneumonia: bool,
    size: int = 256,
    scanner: Scanner | str | None = None,
    difficulty: float = 0.0,
) -> np.ndarray:
    """Render one synthetic frontal chest X-ray: float32 (size, size) in [0, 1], bone bright.

    ``pneumonia`` adds 2-5 patchy bright opacities confined to a lung field. ``scanner`` (a ``Scanner`` or a
    name in ``SCANNERS``) renders it as that site's machine and patient mix would; ``difficulty`` in [0, 1]
    adds subtle pneumonias (few small faint opacities) and, in either class, dense normal regions. With
    neither, the output is the classic look, unchanged draw for draw.
    """
    sc = scanner_named(scanner)
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    shifted = sc is not None or difficulty > 0
    yy, xx = _patient_grid(rng, size, sc)
    img, geo = _anatomy(rng, yy, xx, float(size))
    subtle = min(1.0, (sc.subtle if sc else 0.0) + 0.6 * difficulty)
    confounders = min(1.0, (sc.confounders if sc else 0.0) + 0.7 * difficulty)
    if pneumonia:
        if shifted and rng.random() < subtle:
            img = _opacities(rng, img, yy, xx, geo, count=(1, 4), radius=(0.04, 0.08), strength=(0.15, 0.28))
        else:
            img = _opacities(rng, img, yy, xx, geo)
    if shifted and rng.random() < confounders:
        img = _confounders(rng, img, yy, xx, geo)
    if sc is not None:
        return _scanner_response(rng, img, sc)

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
    # Identifiers as a real film carries them, each holding the patient id so a leak is searchable (PHI tests).
    digest = sum(patient_id.encode())
    ds.PatientName = f"Synthname{patient_id}^Givenname{patient_id}"
    ds.PatientBirthDate = f"19{digest % 80 + 10:02d}{digest % 12 + 1:02d}{digest % 28 + 1:02d}"
    ds.PatientAddress = f"{digest % 900 + 100} Addr{patient_id} Street, Synthville"
    ds.OtherPatientIDs = f"OTHERID-{patient_id}"
    ds.AccessionNumber = f"ACC{patient_id}"[:16]
    ds.InstitutionName = f"Institution{patient_id} General Hospital"
    ds.ReferringPhysicianName = f"Referrer{patient_id}^Doctor"
    ds.StudyDate = f"20{digest % 20 + 5:02d}{digest % 12 + 1:02d}{digest % 28 + 1:02d}"
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


def _iter_samples(
    *,
    n_per_class: int,
    size: int,
    fmt: str,
    seed: int,
    images_per_patient: int,
    scanner: Scanner | str | None = None,
    difficulty: float = 0.0,
    ratio: tuple[float, float] | None = None,
) -> Any:
    """Yield (class, file_stem, image01, dicom_kwargs) for a whole dataset."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    sc = scanner_named(scanner)
    counts = class_counts(n_per_class, ratio)
    rng = np.random.default_rng(seed)
    per = max(1, images_per_patient)
    for ci, cls in enumerate(CLASSES):
        for i in range(counts[cls]):
            patient = f"S{seed:02d}{ci}{i // per:05d}"
            image = render_cxr(rng, pneumonia=cls == "PNEUMONIA", size=size, scanner=sc, difficulty=difficulty)
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
    scanner: Scanner | str | None = None,
    difficulty: float = 0.0,
    ratio: tuple[float, float] | None = None,
) -> Path:
    """Write ``out_dir/NORMAL/*`` and ``out_dir/PNEUMONIA/*`` in ``fmt`` ("png" | "jpeg" | "dicom").

    DICOM files carry a PatientID shared by ``images_per_patient`` consecutive images
    and alternate MONOCHROME1/2, 12/16-bit storage and CR/DX modality, all in
    ``transfer_syntax``. PNG/JPEG carry no patient id (``images_per_patient`` has no
    effect there). ``scanner`` and ``difficulty`` are ``render_cxr``'s; ``ratio`` (NORMAL, PNEUMONIA)
    gives the larger class ``n_per_class`` films and the other its share. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    for cls, stem, image, dkw in _iter_samples(
        n_per_class=n_per_class,
        size=size,
        fmt=fmt,
        seed=seed,
        images_per_patient=images_per_patient,
        scanner=scanner,
        difficulty=difficulty,
        ratio=ratio,
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
    scanner: Scanner | str | None = None,
    difficulty: float = 0.0,
    ratio: tuple[float, float] | None = None,
) -> Path:
    """Write a zip of class folders ``NORMAL/...``, ``PNEUMONIA/...`` (optionally under ``top_folder/``)."""
    out_zip = Path(out_zip)
    prefix = f"{top_folder.strip('/')}/" if top_folder else ""
    with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for cls, stem, image, dkw in _iter_samples(
            n_per_class=n_per_class,
            size=size,
            fmt=fmt,
            seed=seed,
            images_per_patient=images_per_patient,
            scanner=scanner,
            difficulty=difficulty,
            ratio=ratio,
        ):
            name = f"{prefix}{cls}/{stem}{_EXT[fmt]}"
            if fmt == "dicom":
                zf.writestr(name, dicom_bytes(image, transfer_syntax=transfer_syntax, **dkw))
            else:
                zf.writestr(name, _encode(image, fmt), compress_type=zipfile.ZIP_STORED)
    return out_zip
