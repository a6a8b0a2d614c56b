"""Patient identifiers planted in DICOM tags and member file names reach nothing Hilum keeps.

upload -> ingest -> train -> predict through a real stack, then a byte search of the whole data dir
(uploads, datasets, checkpoints, reports, models), the database (the SQLite files, or every PostgreSQL
table as text), the stack's broker keys and every log: zero hits. And the raw upload is gone.
"""

from __future__ import annotations

import io
import secrets
import zipfile
from pathlib import Path

import numpy as np
import pytest
import redis
import sqlalchemy as sa

from pipelines.synthetic import dicom_bytes, render_cxr
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

PER_CLASS = 16


def planted_zip(tag: str) -> tuple[bytes, list[str], tuple[str, bytes]]:
    """A zip of DICOMs whose tags and member names carry identifiers; the identifiers; one (name, file)."""
    rng = np.random.default_rng(7)
    identifiers: list[str] = []
    buf = io.BytesIO()
    probe: tuple[str, bytes] = ("", b"")
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("NORMAL", "PNEUMONIA"):
            for i in range(PER_CLASS):
                n = f"{tag}{cls[0]}{i:02d}"
                surname, given = f"Surn{n}", f"Givn{n}"
                patient_id, other_id, accession = f"PID{n}", f"OPID{n}", f"ACC{n}"
                birth = f"19{20 + i:02d}0{1 + i % 9}1{i % 9}"
                institution = f"Inst{n} Hospital"
                identifiers += [surname, given, patient_id, other_id, accession, institution]
                data = dicom_bytes(
                    render_cxr(rng, pneumonia=cls == "PNEUMONIA", size=64),
                    patient_id=patient_id,
                    extra_tags={
                        "PatientName": f"{surname}^{given}",
                        "PatientBirthDate": birth,
                        "OtherPatientIDs": other_id,
                        "InstitutionName": institution,
                        "AccessionNumber": accession,
                    },
                )
                name = f"{cls}/{surname}_{given}_{patient_id}_{accession}.dcm"
                zf.writestr(name, data)
                probe = (name.rsplit("/", 1)[1], data)
    return buf.getvalue(), identifiers, probe


def database_text(stack: Stack) -> bytes:
    """Everything the database holds: the SQLite files' bytes, or every PostgreSQL table as text."""
    if stack.database_url.startswith("sqlite"):
        path = Path(stack.database_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            rows = [conn.execute(sa.text(f'SELECT t::text FROM "{t}" t')).scalars().all() for t in tables]
    finally:
        engine.dispose()
    return "\n".join(str(r) for table in rows for r in table).encode()


def broker_text(stack: Stack) -> bytes:
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    out = []
    for key in client.scan_iter(match=stack.env["HILUM_BROKER_KEY_PREFIX"] + "*"):
        kind = client.type(key)
        if kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"hash":
            out += list(client.hgetall(key).values())
        elif kind == b"string":
            out.append(client.get(key) or b"")
    return b"\n".join(out)


def hits(blob: bytes, identifiers: list[str]) -> list[str]:
    lowered = blob.lower()
    return [i for i in identifiers if i.lower().encode() in lowered]


def test_planted_identifiers_reach_no_disk_database_broker_or_log(stack: Stack) -> None:
    tag = secrets.token_hex(3).upper()
    archive, identifiers, (probe_name, probe) = planted_zip(tag)
    with stack.client() as client:
        upload = {"file": ("upload.zip", archive, "application/zip")}
        r = client.post("/v1/datasets", files=upload, data={"name": "phi"})
        assert r.status_code == 202, r.text
        dataset = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=180)
        assert dataset["status"] == "ready", dataset
        assert dataset["image_count"] == 2 * PER_CLASS
        assert not (stack.data_dir / "uploads" / f"{dataset['id']}.zip").exists()  # the raw upload is gone
        job = client.post(
            "/v1/jobs",
            json={
                "dataset_id": dataset["id"],
                "backbone": "test_resnet",
                "strategy": "full",
                "epochs": 1,
                "image_size": 32,
                "batch_size": 8,
                "model_name": f"phi-{tag.lower()}",
            },
        )
        assert job.status_code == 202, job.text
        done = wait_for(client, f"/v1/jobs/{job.json()['id']}", {"succeeded", "failed", "cancelled"}, timeout=300)
        assert done["status"] == "succeeded", done
        answer = client.post(  # version 1 explicitly: one epoch on 32 images need not be fit for use
            f"/v1/models/phi-{tag.lower()}/predict",
            params={"version": 1},
            files={"file": (probe_name, probe, "application/dicom")},
        )
        assert answer.status_code == 200, answer.text

    found: dict[str, list[str]] = {}
    for path in sorted(stack.data_dir.rglob("*")):
        if path.is_file() and (h := hits(path.read_bytes(), identifiers)):
            found[str(path.relative_to(stack.data_dir))] = h
    if h := hits(database_text(stack), identifiers):
        found["database"] = h
    if h := hits(broker_text(stack), identifiers):
        found["broker"] = h
    for log in sorted(stack.logs.glob("*")):
        if h := hits(log.read_bytes(), identifiers):
            found[f"log {log.name}"] = h
    assert found == {}, found
    assert len(identifiers) == 6 * 2 * PER_CLASS


def test_the_upload_is_deleted_when_ingestion_fails(stack: Stack) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # passes the structural check, then no image decodes
        for cls in ("NORMAL", "PNEUMONIA"):
            for i in range(3):
                zf.writestr(f"{cls}/{i}.png", b"not an image at all " * 10)
    with stack.client() as client:
        r = client.post("/v1/datasets", files={"file": ("bad.zip", buf.getvalue(), "application/zip")})
        assert r.status_code == 202, r.text
        failed = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
    assert failed["status"] == "failed", failed
    assert not (stack.data_dir / "uploads" / f"{failed['id']}.zip").exists()
