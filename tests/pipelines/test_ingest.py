"""ingest_archive / inspect_upload: layouts, labels.csv, duplicates, conflicts, atomicity, PHI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import model_input as model_input_mod
from pipelines.archive import ArchiveRejected
from pipelines.dataset import image_path, load_manifest
from pipelines.imaging import decode_image
from pipelines.ingest import (
    DatasetRejected,
    IngestConfig,
    ingest_archive,
    inspect_upload,
    patient_key,
)
from pipelines.synthetic import dicom_bytes, render_cxr, write_zip

CONFIG = IngestConfig(patient_salt="test-salt", max_side=64)


def png(seed: int, size: int = 48) -> bytes:
    img = render_cxr(np.random.default_rng(seed), pneumonia=bool(seed % 2), size=size)
    buf = io.BytesIO()
    Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if not p.name.endswith(".zip"))


# ----------------------------------------------------------------------------- folder layout


def test_folder_layout_end_to_end(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "up.zip", n_per_class=4, size=96)
    summary = inspect_upload(z, CONFIG)
    assert (summary.layout, summary.classes, summary.files) == ("folders", ["NORMAL", "PNEUMONIA"], 8)

    calls: list[tuple[int, int]] = []
    out = tmp_path / "ds"
    report = ingest_archive(z, out, CONFIG, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (8, 8)
    assert report.accepted == 8 and report.class_counts == {"NORMAL": 4, "PNEUMONIA": 4}
    assert report.imbalance_ratio == 1.0 and report.patient_count == 8
    assert report.rejected == [] and report.duplicates == [] and report.conflicts == []

    rows = load_manifest(out)
    assert len(rows) == 8 and {r.label for r in rows} == {"NORMAL", "PNEUMONIA"}
    with zipfile.ZipFile(z) as zf:
        for r in rows:
            src = zf.read(r.source_name)
            assert r.source_name.split("/")[0] == r.label
            assert r.content_hash.startswith(r.sample_id) and len(r.sample_id) >= 16
            assert (r.width, r.height, r.source_format) == (96, 96, "png")
            # The stored PNG is exactly the canonical array.
            stored = np.asarray(Image.open(image_path(out, r.sample_id)))
            np.testing.assert_array_equal(stored, decode_image(src, max_side=64).pixels)
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    for key in (
        "accepted",
        "classes",
        "class_counts",
        "imbalance_ratio",
        "patient_count",
        "rejected",
        "duplicates",
        "conflicts",
        "dicom_mix",
    ):
        assert key in saved
    assert leftovers(tmp_path) == ["ds"]  # no temp dir left beside it


def test_common_top_folder_is_stripped(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "up.zip", n_per_class=2, size=64, top_folder="mydata")
    assert inspect_upload(z, CONFIG).classes == ["NORMAL", "PNEUMONIA"]
    report = ingest_archive(z, tmp_path / "ds", CONFIG)
    assert report.class_counts == {"NORMAL": 2, "PNEUMONIA": 2}


def test_root_files_and_bad_images_rejected_with_reasons(tmp_path: Path) -> None:
    tiny = io.BytesIO()
    Image.new("L", (10, 10)).save(tiny, format="PNG")
    z = make_zip(
        tmp_path / "up.zip",
        {
            "NORMAL/a.png": png(0),
            "PNEUMONIA/b.png": png(1),
            "loose.png": png(2),
            "NORMAL/tiny.png": tiny.getvalue(),
            "PNEUMONIA/notes.txt": b"hello",
        },
    )
    report = ingest_archive(z, tmp_path / "ds", CONFIG)
    reasons = {r["file"]: r["reason"] for r in report.rejected}
    assert reasons == {
        "loose.png": "file is not inside a class folder",
        "NORMAL/tiny.png": "image is 10x10 pixels; at least 32 pixels per side are needed",
        "PNEUMONIA/notes.txt": "not a PNG, JPEG or DICOM file",
    }
    assert report.accepted == 2


def test_no_class_folders_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "up.zip", {"a.png": png(0), "b.png": png(1)})
    with pytest.raises(DatasetRejected, match="no class folders"):
        inspect_upload(z, CONFIG)


def test_single_class_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "up.zip", {"NORMAL/a.png": png(0), "NORMAL/b.png": png(1)})
    with pytest.raises(DatasetRejected, match=r"only 1 class folder found \(NORMAL\); at least 2"):
        inspect_upload(z, CONFIG)


def test_hostile_archive_refused_by_inspect(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "up.zip", {"NORMAL/a.png": png(0), "../PNEUMONIA/b.png": png(1)})
    with pytest.raises(ArchiveRejected):
        inspect_upload(z, CONFIG)
    with pytest.raises(ArchiveRejected):
        ingest_archive(z, tmp_path / "ds", CONFIG)
    assert leftovers(tmp_path) == []


def test_inspect_does_not_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("inspect_upload must not decode images")

    monkeypatch.setattr(model_input_mod, "decode_image", boom)
    z = make_zip(tmp_path / "up.zip", {"NORMAL/a.png": b"junk", "PNEUMONIA/b.png": b"junk"})
    assert inspect_upload(z, CONFIG).files == 2


# ----------------------------------------------------------------------------- duplicates, conflicts, atomicity


def test_duplicates_kept_once_and_conflicts_dropped(tmp_path: Path) -> None:
    same, clash = png(0), png(3)
    z = make_zip(
        tmp_path / "up.zip",
        {
            "NORMAL/a.png": same,
            "NORMAL/a_copy.png": same,
            "NORMAL/c.png": clash,
            "PNEUMONIA/c_other.png": clash,
            "NORMAL/d.png": png(4),
            "PNEUMONIA/e.png": png(5),
        },
    )
    out = tmp_path / "ds"
    report = ingest_archive(z, out, CONFIG)
    assert report.duplicates == [{"file": "NORMAL/a_copy.png", "duplicate_of": "NORMAL/a.png"}]
    assert report.conflicts == [
        {"file": "PNEUMONIA/c_other.png", "other": "NORMAL/c.png", "labels": ["NORMAL", "PNEUMONIA"]}
    ]
    names = sorted(r.source_name for r in load_manifest(out))
    assert names == ["NORMAL/a.png", "NORMAL/d.png", "PNEUMONIA/e.png"]  # conflicting bytes: neither kept
    assert len(list((out / "images").iterdir())) == 3


def test_out_dir_must_not_exist(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "up.zip", n_per_class=1, size=64)
    (tmp_path / "ds").mkdir()
    with pytest.raises(FileExistsError):
        ingest_archive(z, tmp_path / "ds", CONFIG)


def test_too_few_classes_after_decoding_leaves_nothing(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "up.zip", {"NORMAL/a.png": png(0), "PNEUMONIA/b.png": b"not an image"})
    assert inspect_upload(z, CONFIG).classes == ["NORMAL", "PNEUMONIA"]  # looks fine before decoding
    with pytest.raises(DatasetRejected, match=r"only 1 class \(NORMAL\).*not a PNG, JPEG or DICOM"):
        ingest_archive(z, tmp_path / "ds", CONFIG)
    assert leftovers(tmp_path) == []


def test_crash_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = write_zip(tmp_path / "up.zip", n_per_class=3, size=64)
    calls = {"n": 0}

    def flaky(data: bytes, **kw: int):  # noqa: ANN202
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk on fire")
        return decode_image(data, **kw)

    monkeypatch.setattr(model_input_mod, "decode_image", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_archive(z, tmp_path / "ds", CONFIG)
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- labels.csv


def test_labels_csv_layout(tmp_path: Path) -> None:
    csv_text = (
        "file,label,patient_id\n"
        "img/a.png,NORMAL,PAT-A\n"
        "img/b.png,NORMAL,PAT-A\n"
        "img/c.png,PNEUMONIA,PAT-B\n"
        "d.png,PNEUMONIA,\n"  # by unique basename
        "img/gone.png,NORMAL,PAT-C\n"
        "img/e.png,,PAT-D\n"
    )
    z = make_zip(
        tmp_path / "up.zip",
        {
            "labels.csv": csv_text.encode(),
            "img/a.png": png(0),
            "img/b.png": png(2),
            "img/c.png": png(1),
            "img/sub/d.png": png(3),
            "img/e.png": png(5),
            "img/unlisted.png": png(7),
        },
    )
    summary = inspect_upload(z, CONFIG)
    assert (summary.layout, summary.classes, summary.files) == ("csv", ["NORMAL", "PNEUMONIA"], 4)
    out = tmp_path / "ds"
    report = ingest_archive(z, out, CONFIG)
    reasons = {r["file"]: r["reason"] for r in report.rejected}
    assert reasons == {
        "img/gone.png": "listed in labels.csv but not in the zip",
        "img/e.png": "empty label",
        "img/unlisted.png": "not listed in labels.csv",
    }
    rows = {r.source_name: r for r in load_manifest(out)}
    assert set(rows) == {"img/a.png", "img/b.png", "img/c.png", "img/sub/d.png"}
    assert rows["img/a.png"].patient_key == rows["img/b.png"].patient_key == patient_key("test-salt", "PAT-A")
    assert rows["img/c.png"].patient_key != rows["img/a.png"].patient_key
    assert report.patient_count == 3
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"PAT-" not in blob


def test_csv_wins_over_folders_and_unknown_labels(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "up.zip",
        {
            "data/labels.csv": b"File,Label\nNORMAL/a.png,PNEUMONIA\nNORMAL/b.png,NORMAL\nNORMAL/c.png,COVID\n",
            "data/NORMAL/a.png": png(0),
            "data/NORMAL/b.png": png(2),
            "data/NORMAL/c.png": png(4),
        },
    )
    config = IngestConfig(patient_salt="s", max_side=64, classes=("NORMAL", "PNEUMONIA"))
    report = ingest_archive(z, tmp_path / "ds", config)
    assert report.layout == "csv"
    assert {r.source_name: r.label for r in load_manifest(tmp_path / "ds")} == {
        "data/NORMAL/a.png": "PNEUMONIA",
        "data/NORMAL/b.png": "NORMAL",
    }
    assert report.rejected == [
        {"file": "data/NORMAL/c.png", "reason": "unknown label 'COVID' (expected one of: NORMAL, PNEUMONIA)"}
    ]


@pytest.mark.parametrize("header,missing", [("file,diagnosis", "label"), ("path,label", "file")])
def test_csv_without_needed_column(tmp_path: Path, header: str, missing: str) -> None:
    z = make_zip(tmp_path / "up.zip", {"labels.csv": f"{header}\na.png,NORMAL\n".encode(), "a.png": png(0)})
    with pytest.raises(DatasetRejected, match=f"labels.csv has no '{missing}' column"):
        inspect_upload(z, CONFIG)


def test_csv_with_one_label_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "up.zip", {"labels.csv": b"file,label\na.png,NORMAL\n", "a.png": png(0)})
    with pytest.raises(DatasetRejected, match="only 1 label"):
        inspect_upload(z, CONFIG)


# ----------------------------------------------------------------------------- DICOM, patients, PHI


def test_dicom_patients_grouped_mix_counted_and_no_phi(tmp_path: Path) -> None:
    z = write_zip(tmp_path / "up.zip", n_per_class=6, size=64, fmt="dicom", images_per_patient=3)
    out = tmp_path / "ds"
    report = ingest_archive(z, out, CONFIG)
    assert report.accepted == 12 and report.patient_count == 4
    rows = load_manifest(out)
    by_patient: dict[str, int] = {}
    for r in rows:
        by_patient[r.patient_key] = by_patient.get(r.patient_key, 0) + 1
    assert sorted(by_patient.values()) == [3, 3, 3, 3]
    mix = report.dicom_mix
    assert mix["photometric"] == {"MONOCHROME1": 6, "MONOCHROME2": 6}
    assert sum(mix["modalities"].values()) == 12 and set(mix["modalities"]) == {"CR", "DX"}
    assert mix["transfer_syntaxes"] == {"Explicit VR Little Endian": 12}

    import pydicom

    raw_ids = set()
    with zipfile.ZipFile(z) as zf:
        for name in zf.namelist():
            raw_ids.add(str(pydicom.dcmread(io.BytesIO(zf.read(name))).PatientID))
    assert len(raw_ids) == 4
    files = [p for p in out.rglob("*") if p.is_file()]
    for pid in raw_ids:
        assert all(pid.encode() not in p.read_bytes() for p in files), f"raw PatientID found in {out}"


def test_mixed_transfer_syntaxes_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    members = {
        f"{'PNEUMONIA' if i % 2 else 'NORMAL'}/{ts}.dcm": dicom_bytes(
            render_cxr(rng, pneumonia=bool(i % 2), size=64), transfer_syntax=ts, patient_id=f"P{i}"
        )
        for i, ts in enumerate(["explicit", "rle", "jpeg2000", "jpeg"])
    }
    report = ingest_archive(make_zip(tmp_path / "up.zip", members), tmp_path / "ds", CONFIG)
    assert report.dicom_mix["transfer_syntaxes"] == {
        "Explicit VR Little Endian": 1,
        "RLE Lossless": 1,
        "JPEG 2000 Image Compression (Lossless Only)": 1,
        "JPEG Baseline (Process 1)": 1,
    }
    assert report.formats == {"dicom": 4}


def test_csv_semicolon_separated_with_bom(tmp_path: Path) -> None:
    text = "\ufefffile;label;Patient_ID\na.png;NORMAL;X1\nb.png;PNEUMONIA;X2\n"
    z = make_zip(tmp_path / "up.zip", {"labels.csv": text.encode("utf-8"), "a.png": png(0), "b.png": png(1)})
    report = ingest_archive(z, tmp_path / "ds", CONFIG)
    assert report.class_counts == {"NORMAL": 1, "PNEUMONIA": 1} and report.patient_count == 2
    keys = {r.source_name: r.patient_key for r in load_manifest(tmp_path / "ds")}
    assert keys["a.png"] == patient_key("test-salt", "X1")


def test_unreadable_csv_refused(tmp_path: Path) -> None:
    huge_field = b'file,label\n"' + b"x" * 200_000 + b'",NORMAL\n'
    z = make_zip(tmp_path / "up.zip", {"labels.csv": huge_field, "a.png": png(0)})
    with pytest.raises(DatasetRejected, match="labels.csv is not a readable CSV file"):
        inspect_upload(z, CONFIG)


def test_csv_naming_no_files_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "up.zip", {"labels.csv": b"file,label\nx.png,NORMAL\ny.png,PNEUMONIA\n", "a.png": png(0)})
    with pytest.raises(DatasetRejected, match=r"names no file of the zip .* \(2 rows name missing files\)"):
        inspect_upload(z, CONFIG)


def test_top_folder_with_stray_root_file(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "up.zip",
        {"mydata/NORMAL/a.png": png(0), "mydata/PNEUMONIA/b.png": png(1), "README.txt": b"read me"},
    )
    assert inspect_upload(z, CONFIG).classes == ["NORMAL", "PNEUMONIA"]
    report = ingest_archive(z, tmp_path / "ds", CONFIG)
    assert report.rejected == [{"file": "README.txt", "reason": "file is not inside a class folder"}]
    assert report.class_counts == {"NORMAL": 1, "PNEUMONIA": 1}


@pytest.mark.parametrize("shape", [(32, 32), (37, 100), (512, 311)])
def test_encode_png_is_lossless(shape: tuple[int, int]) -> None:
    from pipelines.ingest import encode_png

    arr = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(arr))) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), arr)


def test_dicom_of_another_modality_or_body_part_is_rejected_with_its_reason(tmp_path: Path) -> None:
    import zipfile

    import numpy as np

    from pipelines.ingest import IngestConfig, ingest_archive
    from pipelines.synthetic import dicom_bytes, render_cxr

    rng = np.random.default_rng(0)
    zpath = tmp_path / "mixed.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i, (modality, part) in enumerate([("CR", "CHEST"), ("DX", "CHEST"), ("CT", "CHEST"), ("DX", "KNEE")]):
            for cls in ("NORMAL", "PNEUMONIA"):
                image = render_cxr(rng, pneumonia=cls == "PNEUMONIA", size=64)
                zf.writestr(f"{cls}/{i}.dcm", dicom_bytes(image, modality=modality, body_part=part, patient_id=f"p{i}"))
    report = ingest_archive(zpath, tmp_path / "out", IngestConfig(patient_salt="s")).to_dict()
    assert report["accepted"] == 4
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert "Modality is CT" in reasons["NORMAL/2.dcm"] and "KNEE" in reasons["PNEUMONIA/3.dcm"]


# ----------------------------------------------------------------------------- labels and long reports (issue 11)


def test_labels_are_normalised_by_one_rule(tmp_path: Path) -> None:
    from pipelines.ingest import normalise_label

    assert normalise_label("  pneumonia ") == "PNEUMONIA"
    assert normalise_label("Viral  Pneumonia") == "VIRAL PNEUMONIA"
    csv_text = "file,label\na.png,PNEUMONIA\nb.png,pneumonia\nc.png,Pneumonia \nd.png,normal\ne.png, NORMAL\n"
    members = {"labels.csv": csv_text.encode()} | {f"{n}.png": png(i) for i, n in enumerate("abcde")}
    report = ingest_archive(make_zip(tmp_path / "up.zip", members), tmp_path / "ds", CONFIG)
    assert report.classes == ["NORMAL", "PNEUMONIA"]
    assert report.class_counts == {"NORMAL": 2, "PNEUMONIA": 3}
    assert any("merged" in w and "pneumonia" in w for w in report.warnings), report.warnings


def test_folder_names_are_normalised_too(tmp_path: Path) -> None:
    members = {"normal/a.png": png(0), "NORMAL/b.png": png(2), "Pneumonia/c.png": png(1)}
    summary = inspect_upload(make_zip(tmp_path / "up.zip", members), CONFIG)
    assert summary.classes == ["NORMAL", "PNEUMONIA"]


def test_unknown_label_without_pneumonia_is_a_warning(tmp_path: Path) -> None:
    members = {"COVID/a.png": png(0), "COVID/b.png": png(2), "NORMAL/c.png": png(4), "NORMAL/d.png": png(6)}
    report = ingest_archive(make_zip(tmp_path / "up.zip", members), tmp_path / "ds", CONFIG)
    assert report.classes == ["COVID", "NORMAL"]
    assert any("COVID" in w and "NORMAL, PNEUMONIA" in w for w in report.warnings), report.warnings
    assert any("no PNEUMONIA class" in w for w in report.warnings), report.warnings


def test_declared_classes_are_enforced(tmp_path: Path) -> None:
    from dataclasses import replace

    members = {"COVID/a.png": png(0), "NORMAL/c.png": png(4), "PNEUMONIA/e.png": png(1)}
    z = make_zip(tmp_path / "up.zip", members)
    declared = replace(CONFIG, declared_classes=("NORMAL", "PNEUMONIA"))
    with pytest.raises(DatasetRejected, match=r"COVID.*declared classes NORMAL, PNEUMONIA"):
        inspect_upload(z, declared)
    z2 = make_zip(tmp_path / "up2.zip", {"NORMAL/c.png": png(4), "normal/d.png": png(6), "PNEUMONIA/e.png": png(1)})
    assert inspect_upload(z2, replace(CONFIG, declared_classes=("normal", "pneumonia"))).classes == [
        "NORMAL",
        "PNEUMONIA",
    ]
    z3 = make_zip(tmp_path / "up3.zip", {"NORMAL/c.png": png(4), "PNEUMONIA/e.png": png(1)})
    with pytest.raises(DatasetRejected, match=r"no files for the declared class VIRAL"):
        inspect_upload(z3, replace(CONFIG, declared_classes=("NORMAL", "PNEUMONIA", "VIRAL")))


def test_long_rejection_lists_are_summarised_and_kept_whole_in_a_file(tmp_path: Path) -> None:
    from pipelines.dataset import load_rejections
    from pipelines.ingest import REPORT_REJECTED_MAX

    members = {f"NORMAL/bad{i:03d}.png": b"not an image %d" % i for i in range(REPORT_REJECTED_MAX + 50)}
    members |= {"NORMAL/a.png": png(0), "PNEUMONIA/b.png": png(1), "stray.txt": b"x"}
    report = ingest_archive(make_zip(tmp_path / "up.zip", members), tmp_path / "ds", CONFIG)
    assert len(report.rejected) == REPORT_REJECTED_MAX
    assert report.rejected_total == REPORT_REJECTED_MAX + 51
    assert report.rejected_by_reason == {
        "not a PNG, JPEG or DICOM file": REPORT_REJECTED_MAX + 50,
        "file is not inside a class folder": 1,
    }
    saved = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert len(saved["rejected"]) == REPORT_REJECTED_MAX
    total, page = load_rejections(tmp_path / "ds", offset=REPORT_REJECTED_MAX, limit=1000)
    assert total == REPORT_REJECTED_MAX + 51 and len(page) == 51
    assert len(json.dumps(report.to_dict())) < 30_000


def test_long_duplicate_lists_are_capped_with_their_total(tmp_path: Path) -> None:
    from pipelines.ingest import REPORT_REJECTED_MAX

    same = png(0)
    members = {f"NORMAL/copy{i:03d}.png": same for i in range(REPORT_REJECTED_MAX + 21)} | {"PNEUMONIA/b.png": png(1)}
    report = ingest_archive(make_zip(tmp_path / "up.zip", members), tmp_path / "ds", CONFIG)
    assert report.accepted == 2
    assert report.duplicates_total == REPORT_REJECTED_MAX + 20 and len(report.duplicates) == REPORT_REJECTED_MAX


def test_the_report_records_the_canonical_bound(tmp_path: Path) -> None:
    from pipelines.synthetic import write_zip

    archive = write_zip(tmp_path / "d.zip", n_per_class=3, size=96, seed=1)
    report = ingest_archive(archive, tmp_path / "out", IngestConfig(patient_salt="s", max_side=64))
    assert report.to_dict()["max_side"] == 64


def test_a_member_in_an_unreadable_compression_is_rejected_alone(tmp_path: Path) -> None:
    """A Deflate64 member (Windows makes them; zipfile raises NotImplementedError) fails alone (issue 15)."""
    import struct

    from pipelines.synthetic import write_zip

    data = bytearray(write_zip(tmp_path / "d.zip", n_per_class=3, size=48, seed=2).read_bytes())
    central = data.index(b"PK\x01\x02")  # mark the first member as method 9 in both of its headers
    data[8:10] = data[central + 10 : central + 12] = struct.pack("<H", 9)
    (tmp_path / "odd.zip").write_bytes(bytes(data))
    report = ingest_archive(tmp_path / "odd.zip", tmp_path / "out", IngestConfig(patient_salt="s", max_side=64))
    assert report.accepted == 5
    assert [r["reason"] for r in report.rejected] == [
        "the file is compressed with a method that cannot be read (use deflate or none)"
    ]
