"""pipelines.dataset: a dataset version is written by ingestion and read by training through one module."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.dataset import DatasetVersion, load_report
from pipelines.ingest import IngestConfig, ingest_archive
from pipelines.synthetic import write_zip


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> DatasetVersion:
    tmp = tmp_path_factory.mktemp("ds")
    upload = write_zip(tmp / "up.zip", n_per_class=60, size=48, fmt="dicom", images_per_patient=2, seed=4)
    ingest_archive(upload, tmp / "v1", IngestConfig(patient_salt="salt", max_side=64))
    return DatasetVersion(tmp / "v1")


def test_ingestion_writes_a_version_training_can_read(version: DatasetVersion) -> None:
    rows = version.rows()
    assert len(rows) == 120 and version.class_names() == ["NORMAL", "PNEUMONIA"]
    assert all(version.image_path(r.sample_id).is_file() for r in rows)
    assert version.max_side() == 64 and load_report(version.root)["accepted"] == 120


def test_train_data_is_patient_level_with_a_calibration_split(version: DatasetVersion) -> None:
    data = version.train_data(seed=0)
    patient_of = {version.image_path(r.sample_id): r.patient_key for r in version.rows()}
    names = ("train", "val", "calibration", "test")
    patients = {n: {patient_of[Path(p)] for p, _ in getattr(data, n)} for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert patients[a].isdisjoint(patients[b]), (a, b)
    assert sum(len(getattr(data, n)) for n in names) == 120
    # 120 films: validation (~18) is too small to halve, so it serves model selection and calibration both.
    assert data.calibration == [] and data.val
    assert version.train_data(seed=0) == data and version.train_data(seed=1) != data


def test_a_folder_that_is_no_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an ingested dataset version"):
        DatasetVersion(tmp_path)
