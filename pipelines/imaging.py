"""The one decoder: any accepted image file (PNG, JPEG, DICOM) -> the canonical array.

Ingestion, training and inference all call :func:`decode_image`, so a model always
sees pixels prepared exactly as its training data was.

Canonical array: ``uint8``, shape (H, W), grayscale, bone bright, longer side at
most ``max_side`` (aspect ratio kept, never upscaled, Lanczos downsampling).

Choices, documented once:

* 16-bit PNG / 32-bit integer / float images are scaled by their own min..max to
  0..255 (a 12-bit image saved in a 16-bit PNG then uses the full range too).
* Colour PNG/JPEG is accepted: alpha is dropped, and RGB is converted to luminance
  (ITU-R 601). Palette images are expanded first.
* JPEG is decoded straight to luminance (the Y channel), DCT-downscaled while
  decoding (``Image.draft``) to no less than ``max_side``, then EXIF orientation is
  applied. The result depends slightly on ``max_side``: use one value everywhere.
* Resource bounds: width x height (x frames for DICOM) is checked from the header before any
  pixel is decoded and refused past ``MAX_PIXELS`` (40 MP by default: a 43 cm detector at 100 um
  is 18.5 MP, a film scanned at 70 um about 36 MP; the canonical side is always reached). A
  process may also bound how many images it decodes at once (``configure_decoding``): the API
  does, so eight hostile uploads cannot each hold a full-size decode.
* DICOM: modality LUT / rescale, then the first VOI LUT or window (center/width,
  linear), otherwise min..max of the modality values; MONOCHROME1 or a
  Presentation LUT Shape of INVERSE is inverted once so bone is bright.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MIN_SIDE = 32
# Decompression-bomb guard: refuse images with more pixels than this (checked from the header,
# before decoding; Pillow's own MAX_IMAGE_PIXELS error is also turned into ImageRejected).
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS = DEFAULT_MAX_PIXELS  # this process's limit (configure_decoding; HILUM_MAX_IMAGE_PIXELS)
_decode_slots: threading.BoundedSemaphore | None = None


def configure_decoding(*, max_pixels: int | None = None, max_concurrent: int | None = None) -> None:
    """Set this process's decode limits: pixels per image and how many images decode at once (0: no bound).
    None keeps a limit as it is. The API calls it at start-up from its settings."""
    global MAX_PIXELS, _decode_slots
    if max_pixels is not None:
        MAX_PIXELS = max_pixels
    if max_concurrent is not None:
        _decode_slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent > 0 else None


@contextmanager
def _decode_slot() -> Iterator[None]:
    slots = _decode_slots
    if slots is None:
        yield
        return
    with slots:
        yield


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


class ImageRejected(ValueError):
    """The file cannot be used as an image; ``str(exc)`` says why in plain words."""


@dataclass(frozen=True)
class DicomInfo:
    modality: str | None
    body_part: str | None
    photometric: str
    transfer_syntax: str
    bits_stored: int


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray
    source_format: str
    width: int
    height: int
    patient_id: str | None
    dicom: DicomInfo | None


def sniff_format(data: bytes) -> str | None:
    """Return "png", "jpeg" or "dicom" from the magic bytes (DICOM: "DICM" at offset 128), else None."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


# What a DICOM must declare to count as a chest radiograph: a projection X-ray modality, and a body
# part that is one of these or absent. PNG and JPEG carry neither and are taken as they are.
CHEST_XRAY_MODALITIES = frozenset({"CR", "DX", "DR"})
CHEST_BODY_PARTS = frozenset({"CHEST"})


def chest_xray_problem(info: DicomInfo | None) -> str | None:
    """Why a DICOM is not a chest X-ray by its own header, or None when it is (or is not a DICOM)."""
    if info is None:
        return None
    if (info.modality or "").upper() not in CHEST_XRAY_MODALITIES:
        return (
            f"DICOM Modality is {info.modality or 'missing'}; only chest X-rays "
            f"({', '.join(sorted(CHEST_XRAY_MODALITIES))}) are accepted"
        )
    if info.body_part and info.body_part.upper() not in CHEST_BODY_PARTS:
        return f"DICOM BodyPartExamined is {info.body_part}; only {', '.join(sorted(CHEST_BODY_PARTS))} is accepted"
    return None


def decode_image(data: bytes, *, max_side: int = 512, max_pixels: int | None = None) -> DecodedImage:
    """Decode PNG, JPEG or DICOM bytes into the canonical array; raise ImageRejected with a reason.

    Never raises anything else for bad input: an unexpected decoder error is reported as a
    damaged file, so one bad file cannot abort a whole ingestion. ``max_pixels`` (default: this
    process's ``MAX_PIXELS``) is checked from the header, before decoding.
    """
    if not data:
        raise ImageRejected("the file is empty")
    fmt = sniff_format(data)
    if fmt is None and _looks_like_raw_dicom(data):
        fmt = "dicom"
    if fmt is None:
        raise ImageRejected("not a PNG, JPEG or DICOM file")
    limit = max_pixels or MAX_PIXELS
    try:
        with _decode_slot():
            if fmt == "dicom":
                return _decode_dicom(data, max_side, limit)
            return _decode_pil(data, fmt, max_side, limit)
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party decoders raise anything on hostile input
        log.debug("unexpected %s while decoding a %s file: %s", type(exc).__name__, fmt, exc)
        raise ImageRejected(f"{fmt.upper()} file is damaged and cannot be decoded") from None


def _check_size(width: int, height: int, max_pixels: int, frames: int = 1) -> None:
    if width * height * frames > max_pixels:
        of = f" x {frames} frames" if frames > 1 else ""
        raise ImageRejected(
            f"image is {width}x{height} pixels{of}, over the limit of {max_pixels / 1e6:.1f} megapixels "
            "(refused before decoding: a possible decompression bomb); send a smaller image"
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageRejected(f"image is {width}x{height} pixels; at least {MIN_SIDE} pixels per side are needed")


def _fit(u8: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale a uint8 (H, W) array so its longer side is at most ``max_side``; never upscale."""
    h, w = u8.shape
    longest = max(h, w)
    if longest <= max_side:
        return np.ascontiguousarray(u8)
    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(u8, mode="L").resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def _to_unit(arr: np.ndarray) -> np.ndarray:
    """Min..max scale any numeric array to float32 [0, 1] (a constant image becomes all zeros)."""
    a = np.array(arr, dtype=np.float32)  # a copy: modified in place below
    if arr.dtype.kind == "f" and not np.isfinite(a).all():
        np.nan_to_num(a, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    a -= lo
    a *= 1.0 / (hi - lo)
    return a


def _to_unit_u8(arr: np.ndarray) -> np.ndarray:
    """Min..max scale any numeric array to uint8 0..255."""
    return np.rint(_to_unit(arr) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- PNG / JPEG


def _decode_pil(data: bytes, fmt: str, max_side: int, max_pixels: int) -> DecodedImage:
    name = "PNG" if fmt == "png" else "JPEG"
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=[name])
        width, height = img.size
        _check_size(width, height, max_pixels)
        if fmt == "jpeg" and img.mode in ("L", "RGB", "YCbCr"):
            # Decode straight to luminance, DCT-scaled to no less than max_side: much faster for big films.
            img.draft("L", (max_side, max_side))
        img.load()
        if fmt == "jpeg":
            img = ImageOps.exif_transpose(img) or img
        u8 = _pil_to_gray_u8(img)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:  # past Pillow's own header limit (2 x 89 MP): name ours
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageRejected(
            f"image is {size}, over the limit of {max_pixels / 1e6:.1f} megapixels "
            "(refused before decoding: a possible decompression bomb); send a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        log.debug("PIL decode failed: %s", exc)
        raise ImageRejected(f"{name} file is damaged or truncated and cannot be decoded") from None
    return DecodedImage(
        pixels=_fit(u8, max_side),
        source_format=fmt,
        width=width,
        height=height,
        patient_id=None,
        dicom=None,
    )


def _pil_to_gray_u8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 grayscale (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_unit_u8(np.asarray(img))
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La"):
        return np.asarray(img.getchannel("L"), dtype=np.uint8)
    if mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(r)
    return np.asarray(img.convert("RGB").convert("L"), dtype=np.uint8)


# --------------------------------------------------------------------------- DICOM


def _looks_like_raw_dicom(data: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble: readable by pydicom with plausible elements."""
    if len(data) < 8:
        return False
    # The first tag of a real data set is a group 0x0002 or 0x0008 element (little or big endian).
    if data[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    try:
        ds = _read_dicom(data, stop_before_pixels=True)
    except ImageRejected:
        return False
    return any(k in ds for k in ("SOPClassUID", "Rows", "Modality", "StudyInstanceUID"))


def _read_dicom(data: bytes, *, stop_before_pixels: bool = False):  # noqa: ANN202 - pydicom Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    # pydicom's default validation warns *and logs* invalid values verbatim, which can put
    # patient data (names, dates, ids) into our logs. Nothing here depends on validation.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        log.debug("pydicom read failed: %s", exc)
        raise ImageRejected("DICOM file is damaged or truncated and cannot be read") from None


def _decode_dicom(data: bytes, max_side: int, max_pixels: int) -> DecodedImage:
    ds = _read_dicom(data)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageRejected("DICOM has no pixel data (it may be a report or structured document)")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageRejected("DICOM is missing its image size (Rows/Columns)")
    frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    width, height = int(ds.Columns), int(ds.Rows)
    _check_size(width, height, max_pixels, frames)
    if frames > 1:
        raise ImageRejected(f"DICOM is a multi-frame image ({frames} frames); send single images only")
    ts_name = _check_transfer_syntax(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()

    values, is_colour = _dicom_values(ds, ts_name, photometric)
    unit = _voi_to_unit(values, ds)
    del values
    presentation_inverse = str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    if presentation_inverse or (photometric == "MONOCHROME1" and not is_colour):
        np.subtract(1.0, unit, out=unit)
    unit *= 255.0
    u8 = np.rint(unit, out=unit).astype(np.uint8)

    info = DicomInfo(
        modality=_str_or_none(ds.get("Modality")),
        body_part=_str_or_none(ds.get("BodyPartExamined")),
        photometric=photometric,
        transfer_syntax=ts_name,
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
    )
    return DecodedImage(
        pixels=_fit(u8, max_side),
        source_format="dicom",
        width=width,
        height=height,
        patient_id=_str_or_none(ds.get("PatientID")),
        dicom=info,
    )


def _check_transfer_syntax(ds) -> str:  # noqa: ANN001 - pydicom Dataset
    """Fill in a missing transfer syntax, refuse one no installed plugin decodes; return its name."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
    tsyntax = UID(meta.TransferSyntaxUID)
    ts_name = tsyntax.name if tsyntax.is_transfer_syntax else str(tsyntax)
    if tsyntax.is_transfer_syntax and tsyntax.is_compressed:
        try:
            available = get_decoder(tsyntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise ImageRejected(f"DICOM compression '{ts_name}' is not supported; send uncompressed DICOM")
    return ts_name


def _dicom_values(ds, ts_name: str, photometric: str) -> tuple[np.ndarray, bool]:  # noqa: ANN001
    """Decoded pixel values after the modality LUT / rescale; colour input only if it is really grey."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the pixel data is unusable
        log.debug("pixel decode failed (%s): %s", ts_name, exc)
        raise ImageRejected(f"DICOM pixel data could not be decoded ({ts_name}); the file may be damaged") from None
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3 or int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return _grey_from_colour_dicom(arr, photometric), True
    if arr.ndim != 2:
        raise ImageRejected("DICOM pixel data is not a single 2-D image")
    return apply_modality_lut(arr, ds), False


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _grey_from_colour_dicom(arr: np.ndarray, photometric: str) -> np.ndarray:
    """Accept a colour DICOM only when it is really grey (all channels equal, or YBR with flat chroma)."""
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ImageRejected("DICOM has an unsupported pixel layout")
    a = arr.astype(np.int32)
    if photometric.startswith("YBR"):
        # pydicom converts YBR to RGB by default; handle the case where it did not.
        pass
    spread = np.abs(a[..., 0] - a[..., 1]).max(initial=0), np.abs(a[..., 1] - a[..., 2]).max(initial=0)
    if max(spread) > 2:
        raise ImageRejected(f"DICOM is a colour image ({photometric}); a grayscale X-ray is needed")
    return a.mean(axis=-1)


def _voi_to_unit(values: np.ndarray, ds) -> np.ndarray:  # noqa: ANN001 - pydicom Dataset
    """Apply the first VOI LUT or window (center/width), else min..max; return floats in [0, 1]."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        from pydicom.pixels import apply_voi_lut

        try:
            out = apply_voi_lut(values.astype(np.int64) if values.dtype.kind == "f" else values, ds, index=0)
            return _to_unit(out)
        except Exception as exc:  # noqa: BLE001 - a broken LUT falls back to min..max
            log.debug("VOI LUT ignored: %s", exc)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        lo = center - width / 2.0
        out = np.asarray(values, dtype=np.float32) - np.float32(lo)
        out *= np.float32(1.0 / width)
        return np.clip(out, 0.0, 1.0, out=out)
    return _to_unit(values)


def _first(value: object) -> float | None:
    """First number of a possibly multi-valued DS element."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, str):
            value = value[0]  # type: ignore[index]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None
