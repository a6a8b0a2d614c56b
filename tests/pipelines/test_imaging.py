"""decode_image: every accepted format gives the canonical array; every bad file a plain-words reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from pipelines import imaging
from pipelines.imaging import MIN_SIDE, DecodedImage, ImageRejected, decode_image
from pipelines.synthetic import dicom_bytes, render_cxr

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def cxr() -> np.ndarray:
    return render_cxr(np.random.default_rng(0), pneumonia=True, size=128)


def u8(img01: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img01, 0, 1) * 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bundled(name: str) -> bytes:
    path = PYDICOM_FILES / name
    if not path.exists():
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return path.read_bytes()


def assert_canonical(d: DecodedImage) -> None:
    assert d.pixels.dtype == np.uint8 and d.pixels.ndim == 2


# ----------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_roundtrip(cxr: np.ndarray) -> None:
    d = decode_image(encode(Image.fromarray(u8(cxr))))
    assert_canonical(d)
    np.testing.assert_array_equal(d.pixels, u8(cxr))
    assert (d.source_format, d.width, d.height, d.patient_id, d.dicom) == ("png", 128, 128, None, None)


def test_png_16bit_scaled_by_min_max() -> None:
    ramp = np.tile(np.linspace(1000, 3000, 64).astype(np.uint16), (48, 1))  # 12-bit data in a 16-bit PNG
    d = decode_image(encode(Image.fromarray(ramp)))
    assert d.pixels.min() == 0 and d.pixels.max() == 255
    assert np.all(np.diff(d.pixels[0].astype(int)) >= 0)  # order kept


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_grey_stored_as_colour_equals_grey(cxr: np.ndarray, mode: str) -> None:
    grey = Image.fromarray(u8(cxr))
    d = decode_image(encode(grey.convert(mode)))
    np.testing.assert_array_equal(d.pixels, np.asarray(grey))


def test_true_colour_becomes_luminance() -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    d = decode_image(encode(Image.fromarray(rgb)))
    assert abs(int(d.pixels.mean()) - round(200 * 0.299)) <= 1


def test_jpeg_decodes_close_to_source(cxr: np.ndarray) -> None:
    d = decode_image(encode(Image.fromarray(u8(cxr)), "JPEG", quality=95))
    assert d.source_format == "jpeg"
    assert np.abs(d.pixels.astype(int) - u8(cxr).astype(int)).mean() < 3


def test_big_jpeg_downscaled_keeping_aspect() -> None:
    img = Image.fromarray(u8(render_cxr(np.random.default_rng(1), pneumonia=False, size=256))).resize((2000, 1000))
    d = decode_image(encode(img, "JPEG"), max_side=256)
    assert d.pixels.shape == (128, 256)
    assert (d.width, d.height) == (2000, 1000)


def test_jpeg_exif_orientation_applied() -> None:
    img = Image.new("L", (80, 40), 0)
    img.paste(255, (0, 0, 40, 40))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    d = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert d.pixels.shape == (80, 40)
    assert d.pixels[:40].mean() > 200 and d.pixels[40:].mean() < 50


def test_never_upscaled(cxr: np.ndarray) -> None:
    d = decode_image(encode(Image.fromarray(u8(cxr))), max_side=1024)
    assert d.pixels.shape == (128, 128)


@pytest.mark.parametrize("size,ok", [((MIN_SIDE, MIN_SIDE), True), ((10, 10), False), ((200, 31), False)])
def test_minimum_side(size: tuple[int, int], ok: bool) -> None:
    data = encode(Image.new("L", size, 128))
    if ok:
        assert decode_image(data).pixels.shape == (size[1], size[0])
    else:
        with pytest.raises(ImageRejected, match=rf"image is {size[0]}x{size[1]} pixels; at least 32"):
            decode_image(data)


def test_decompression_bomb_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageRejected, match="decompression bomb"):
        decode_image(encode(Image.new("L", (200, 200))))


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"hello, this is a text file, not an X-ray" * 10, "not a PNG, JPEG or DICOM file"),
        (b"%PDF-1.7\n" + b"\0" * 300, "not a PNG, JPEG or DICOM file"),
    ],
)
def test_not_an_image(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected, match=reason):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(cxr: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(u8(cxr)), fmt)
    with pytest.raises(ImageRejected, match="damaged or truncated"):
        decode_image(data[: len(data) // 3])


# ----------------------------------------------------------------------------- DICOM


def test_dicom_monochrome1_equals_monochrome2_twin(cxr: np.ndarray) -> None:
    m1 = decode_image(dicom_bytes(cxr, photometric="MONOCHROME1"))
    m2 = decode_image(dicom_bytes(cxr, photometric="MONOCHROME2"))
    np.testing.assert_array_equal(m1.pixels, m2.pixels)
    assert m1.dicom is not None and m1.dicom.photometric == "MONOCHROME1"
    # Bone is bright: the spine column is brighter than the lungs.
    assert m1.pixels[50:90, 62:66].mean() > m1.pixels[50:80, 30:45].mean()


def test_dicom_12_vs_16_bit(cxr: np.ndarray) -> None:
    a = decode_image(dicom_bytes(cxr, bits_stored=12))
    b = decode_image(dicom_bytes(cxr, bits_stored=16))
    assert a.dicom is not None and b.dicom is not None
    assert (a.dicom.bits_stored, b.dicom.bits_stored) == (12, 16)
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= 1


@pytest.mark.parametrize("ts,tol", [("implicit", 0), ("rle", 0), ("jpeg2000", 0), ("jpeg", 12)])
def test_dicom_compressed_roundtrip(cxr: np.ndarray, ts: str, tol: int) -> None:
    ref = decode_image(dicom_bytes(cxr, transfer_syntax="explicit", bits_stored=8 if ts == "jpeg" else 12))
    d = decode_image(dicom_bytes(cxr, transfer_syntax=ts, photometric="MONOCHROME1"))
    diff = np.abs(d.pixels.astype(int) - ref.pixels.astype(int))
    assert diff.max() <= tol and diff.mean() <= tol / 4
    assert d.dicom is not None and d.dicom.transfer_syntax != ref.dicom.transfer_syntax  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"]
)
def test_dicom_codecs_match_uncompressed(name: str) -> None:
    """pydicom's bundled MR_small in several transfer syntaxes (JPEG-LS via pylibjpeg-libjpeg)."""
    ref = decode_image(bundled("MR_small.dcm"))
    np.testing.assert_array_equal(decode_image(bundled(name)).pixels, ref.pixels)


def test_dicom_jpeg_extended_12bit() -> None:
    d = decode_image(bundled("JPGExtended.dcm"))
    assert d.dicom is not None and d.dicom.bits_stored == 12 and "Extended" in d.dicom.transfer_syntax
    assert d.pixels.max() > 0


def test_dicom_window_and_rescale_honoured() -> None:
    ramp = np.tile(np.linspace(0, 1, 256), (64, 1))  # stored 0..4095
    # modality = stored - 1024; window [-1024, 1024] covers stored 0..2048, the rest saturates.
    d = decode_image(dicom_bytes(ramp, rescale=(1.0, -1024.0), window=(0.0, 2048.0)))
    stored = np.rint(ramp * 4095)
    expected = np.rint(np.clip(stored / 2048.0, 0, 1) * 255)
    assert np.abs(d.pixels.astype(int) - expected.astype(int)).max() <= 1
    assert (d.pixels[:, 140:] == 255).all()
    # Without the rescale the same window would cover stored 0..1024 only.
    d2 = decode_image(dicom_bytes(ramp, window=(0.0, 2048.0)))
    assert (d2.pixels[:, 70:] == 255).all() and not np.array_equal(d.pixels, d2.pixels)


def test_dicom_no_window_is_min_max_and_rescale_invariant(cxr: np.ndarray) -> None:
    a = decode_image(dicom_bytes(cxr))
    b = decode_image(dicom_bytes(cxr, rescale=(2.0, -500.0)))
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.pixels.min() == 0 and a.pixels.max() == 255


def test_dicom_presentation_lut_inverse(cxr: np.ndarray) -> None:
    plain = decode_image(dicom_bytes(cxr))
    inverse = decode_image(dicom_bytes(cxr, presentation_lut_shape="INVERSE"))
    np.testing.assert_array_equal(inverse.pixels, 255 - plain.pixels)
    # MONOCHROME1 with INVERSE (the usual pairing) is inverted once, not twice.
    m1 = decode_image(dicom_bytes(cxr, photometric="MONOCHROME1", presentation_lut_shape="INVERSE"))
    np.testing.assert_array_equal(m1.pixels, plain.pixels)


def test_dicom_voi_lut_sequence(cxr: np.ndarray) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(cxr, bits_stored=12)))
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    lut = np.zeros(4096, np.uint16)
    lut[2048:] = 65535  # a hard threshold at stored value 2048
    item.LUTData = lut.tobytes()  # OW
    ds.VOILUTSequence = [item]
    buf = io.BytesIO()
    ds.save_as(buf)
    d = decode_image(buf.getvalue())
    assert set(np.unique(d.pixels)) == {0, 255}
    np.testing.assert_array_equal(d.pixels == 255, ds.pixel_array >= 2048)


def test_dicom_metadata_and_patient_id(cxr: np.ndarray) -> None:
    d = decode_image(dicom_bytes(cxr, patient_id="PAT-42", modality="DX"))
    assert d.patient_id == "PAT-42" and d.source_format == "dicom"
    assert d.dicom is not None and (d.dicom.modality, d.dicom.body_part) == ("DX", "CHEST")
    assert (d.width, d.height) == (128, 128)


def test_dicom_without_preamble(cxr: np.ndarray) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(cxr)))
    buf = io.BytesIO()
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    ds.save_as(buf, implicit_vr=True, little_endian=True)  # a bare data set: no preamble, no "DICM"
    raw = buf.getvalue()
    assert raw[128:132] != b"DICM"
    d = decode_image(raw)
    np.testing.assert_array_equal(d.pixels, decode_image(dicom_bytes(cxr)).pixels)


def _bare_dicom(**elements: object) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    for k, v in elements.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_no_pixel_data() -> None:
    with pytest.raises(ImageRejected, match="DICOM has no pixel data"):
        decode_image(_bare_dicom(PatientID="X"))


def test_dicom_multi_frame_rejected() -> None:
    frames = np.zeros((2, 64, 64), np.uint8)
    data = _bare_dicom(
        Rows=64,
        Columns=64,
        NumberOfFrames=2,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        PixelData=frames.tobytes(),
    )
    with pytest.raises(ImageRejected, match=r"multi-frame image \(2 frames\)"):
        decode_image(data)


def test_dicom_truncated_pixel_data(cxr: np.ndarray) -> None:
    data = dicom_bytes(cxr)
    with pytest.raises(ImageRejected, match="damaged"):
        decode_image(data[: len(data) // 2])


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_dicom_corrupt_header() -> None:
    data = bytearray(dicom_bytes(np.zeros((64, 64))))
    data[140:400] = b"\xff" * 260  # garbage over the file meta information
    with pytest.raises(ImageRejected):
        decode_image(bytes(data))


def test_dicom_colour_rejected_but_grey_rgb_accepted(cxr: np.ndarray) -> None:
    def rgb_dicom(rgb: np.ndarray) -> bytes:
        return _bare_dicom(
            Rows=rgb.shape[0],
            Columns=rgb.shape[1],
            SamplesPerPixel=3,
            PlanarConfiguration=0,
            PhotometricInterpretation="RGB",
            BitsAllocated=8,
            BitsStored=8,
            HighBit=7,
            PixelRepresentation=0,
            PixelData=rgb.tobytes(),
        )

    grey = np.repeat(u8(cxr)[..., None], 3, axis=2)
    d = decode_image(rgb_dicom(grey))
    np.testing.assert_array_equal(d.pixels, u8(cxr))
    colour = grey.copy()
    colour[..., 0] = 255
    with pytest.raises(ImageRejected, match="colour image"):
        decode_image(rgb_dicom(colour))


def test_dicom_unsupported_transfer_syntax(cxr: np.ndarray) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(cxr, transfer_syntax="jpeg")))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder exists
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(ImageRejected, match="compression .* is not supported"):
        decode_image(buf.getvalue())


def test_dicom_downscaled_to_max_side() -> None:
    wide = render_cxr(np.random.default_rng(2), pneumonia=False, size=256)[:128]
    d = decode_image(dicom_bytes(wide), max_side=64)
    assert d.pixels.shape == (32, 64) and (d.width, d.height) == (256, 128)


def test_unexpected_decoder_error_becomes_rejection(cxr: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*a: object, **k: object) -> None:
        raise IndexError("decoder bug")

    monkeypatch.setattr(imaging, "_dicom_values", explode)
    with pytest.raises(ImageRejected, match="DICOM file is damaged"):
        decode_image(dicom_bytes(cxr))


def test_dicom_values_never_logged(cxr: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    """pydicom's validation would log invalid values verbatim (patient data); decoding must not."""
    import logging
    import warnings

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(cxr, patient_id="PHI-" + "7" * 80)))
    ds.BodyPartExamined = "PHI-doe^john chest"  # invalid CS, and a tag the decoder reads
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = decode_image(buf.getvalue())
    assert d.patient_id is not None and d.patient_id.startswith("PHI-")
    assert "PHI-" not in caplog.text
    assert not [w for w in caught if "PHI-" in str(w.message)]


# --------------------------------------------------------------------------- resource bounds (issue 11)


def huge_png(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of zeros, built row by row (a few hundred kB, never the pixels in memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return imaging.PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_9990_square_png_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = huge_png(9990, 9990)
    assert len(data) < 400_000
    loads: list[object] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self))  # never reached
    with pytest.raises(ImageRejected, match=r"9990x9990 pixels.*limit of 40\.0 megapixels"):
        decode_image(data)
    assert loads == []


def test_pixel_limit_is_a_parameter() -> None:
    data = encode(Image.new("L", (300, 200), 100))
    with pytest.raises(ImageRejected, match="300x200 pixels"):
        decode_image(data, max_pixels=300 * 200 - 1)
    assert decode_image(data, max_pixels=300 * 200).pixels.shape == (200, 300)


def test_limit_fits_the_canonical_size() -> None:
    side = int(imaging.DEFAULT_MAX_PIXELS**0.5)
    assert side >= 6000  # a 43 cm detector at 100 um (4300 px) and scanned films fit; the canonical side is reached


def test_dicom_rows_columns_frames_checked_before_pixels(cxr: np.ndarray) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(cxr)))
    ds.Rows, ds.Columns = 9990, 9990  # the pixel data stays small: refused from the header alone
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageRejected, match="9990x9990 pixels"):
        decode_image(buf.getvalue())
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4000, 4000, 3  # 48 MP over three frames
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageRejected, match="3 frames"):
        decode_image(buf.getvalue(), max_pixels=40_000_000)


def test_large_jpeg_is_decoded_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    img = Image.new("L", (4000, 3000), 90)
    data = encode(img, "JPEG")
    from PIL import JpegImagePlugin

    drafts: list[tuple] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # type: ignore[no-untyped-def]
        result = real_draft(self, mode, size)
        drafts.append((mode, size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    d = decode_image(data, max_side=512)
    assert drafts and drafts[0][2][0] <= 1000, drafts  # DCT-scaled while decoding (1/4 or smaller)
    assert max(d.pixels.shape) == 512


def test_concurrent_decodes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    inside, peak, lock = 0, 0, threading.Lock()
    pair = threading.Barrier(2, timeout=20)

    def fake_decode(data: bytes, fmt: str, max_side: int, max_pixels: int) -> DecodedImage:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        pair.wait()  # two at a time meet here, so two really overlap
        with lock:
            inside -= 1
        return DecodedImage(np.zeros((32, 32), np.uint8), fmt, 32, 32, None, None)

    monkeypatch.setattr(imaging, "_decode_pil", fake_decode)
    imaging.configure_decoding(max_concurrent=2)
    try:
        threads = [threading.Thread(target=decode_image, args=(encode(Image.new("L", (40, 40))),)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    finally:
        imaging.configure_decoding(max_concurrent=0)
    assert peak == 2
