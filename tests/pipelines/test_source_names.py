"""Member paths are stored only as pseudonyms: the class folder, an HMAC and the extension."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pipelines.dataset import load_manifest
from pipelines.ingest import IngestConfig, ingest_archive, pseudonymise_source
from pipelines.synthetic import write_zip


@pytest.mark.parametrize(
    ("name", "folder", "pattern"),
    [
        ("NORMAL/Doe^John_123456.dcm", "NORMAL", r"NORMAL/[0-9a-f]{16}\.dcm"),
        ("top/PNEUMONIA/19230517 Smith.PNG", "PNEUMONIA", r"PNEUMONIA/[0-9a-f]{16}\.png"),
        ("Smith_Jane", None, r"[0-9a-f]{16}"),
        ("x/Smith.Jane_MRN-1234567", None, r"[0-9a-f]{16}"),  # not an extension: dropped
    ],
)
def test_the_rule(name: str, folder: str | None, pattern: str) -> None:
    import re

    out = pseudonymise_source(name, "k", folder=folder)
    assert re.fullmatch(pattern, out), out
    assert out == pseudonymise_source(name, "k", folder=folder)  # stable
    assert out != pseudonymise_source(name, "other key", folder=folder)  # keyed


def test_ingestion_keeps_no_member_path(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "d.zip", n_per_class=6, size=64, seed=1, top_folder="Doe_John_MRN998877")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("Doe_John_MRN998877/NORMAL/Doe_John_MRN998877_bad.png", b"not an image")
        zf.writestr("Doe_John_MRN998877/NORMAL/Doe_John_MRN998877_copy.png", zf.read(zf.namelist()[0]))
    config = IngestConfig(patient_salt="s", source_key="secret")
    report = ingest_archive(archive, tmp_path / "ds", config)
    assert report.accepted == 12 and len(report.rejected) == 1 and len(report.duplicates) == 1
    stored = (tmp_path / "ds" / "manifest.jsonl").read_text() + json.dumps(report.to_dict())
    assert "Doe" not in stored and "998877" not in stored and "normal_0" not in stored
    assert {r.source_name.split("/")[0] for r in load_manifest(tmp_path / "ds")} == {"NORMAL", "PNEUMONIA"}
    assert report.duplicates[0]["duplicate_of"] in {r.source_name.split("/")[1] for r in load_manifest(tmp_path / "ds")}
