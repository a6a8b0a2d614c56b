"""Patient identifiers planted in DICOM tags and member file names reach nothing Hilum keeps.

upload -> ingest -> train -> predict through a real stack, then a byte search of the whole data dir
(uploads, datasets, checkpoints, reports, models; zips such as torch saves unpacked), the database (the
SQLite files, or every PostgreSQL table as text), the stack's broker keys and every log: zero hits. And
the raw upload is gone.
"""

from __future__ import annotations

import io
import re
import secrets
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import redis
import sqlalchemy as sa

from pipelines.synthetic import dicom_bytes, render_cxr
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

PER_CLASS = 16


# Every identifying attribute the synthetic DICOMs carry (pipelines/synthetic.py: dicom_bytes).
PHI_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientAddress",
    "OtherPatientIDs",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDate",
)


def identifiers_of(data: bytes) -> list[str]:
    """The identifying values of one DICOM, read back from its header, plus their distinctive parts."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values = [str(ds[keyword].value) for keyword in PHI_TAGS]
    assert all(values), dict(zip(PHI_TAGS, values, strict=True))
    parts = [p for v in values for p in re.split(r"[\s^,]+", v) if p.startswith(("PID", "Synth", "Giv", "Ref", "Addr"))]
    return [*values, *parts]


def planted_zip(tag: str) -> tuple[bytes, list[str], tuple[str, bytes]]:
    """A zip of DICOMs whose headers and member names carry identifiers; the identifiers; one (name, file)."""
    rng = np.random.default_rng(7)
    identifiers: list[str] = []
    buf = io.BytesIO()
    probe: tuple[str, bytes] = ("", b"")
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("NORMAL", "PNEUMONIA"):
            for i in range(PER_CLASS):
                data = dicom_bytes(
                    render_cxr(rng, pneumonia=cls == "PNEUMONIA", size=64), patient_id=f"PID{tag}{cls[0]}{i:02d}"
                )
                found = identifiers_of(data)
                identifiers += found
                ds = pydicom.dcmread(io.BytesIO(data))
                name = f"{cls}/{str(ds.PatientName).replace('^', '_')}_{ds.PatientBirthDate}_{ds.AccessionNumber}.dcm"
                zf.writestr(name, data)
                probe = (name.rsplit("/", 1)[1], data)
    return buf.getvalue(), sorted(set(identifiers)), probe


def expanded(blob: bytes) -> bytes:
    """``blob`` and, when it is a zip (a torch save, an archive), every member's bytes, uncompressed."""
    if blob[:4] != b"PK\x03\x04":
        return blob
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return blob + b"".join(expanded(zf.read(info)) for info in zf.infolist())
    except zipfile.BadZipFile:
        return blob


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
    """Every key and value in the stack's Redis database (broker, results, rate limits; any prefix)."""
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    out: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out.append(key)
        if kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"hash":
            out += [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"set":
            out += client.smembers(key)
        elif kind == b"zset":
            out += client.zrange(key, 0, -1)
        elif kind == b"stream":
            out += [repr(entry).encode() for entry in client.xrange(key)]
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
        batch = client.post(
            f"/v1/models/phi-{tag.lower()}/predict/batch",
            params={"version": 1},
            files=[("files", (probe_name, probe, "application/dicom"))],
        )
        assert batch.status_code == 200 and batch.json()["results"][0]["ok"], batch.text

    found: dict[str, list[str]] = {}
    for path in sorted(stack.data_dir.rglob("*")):
        if path.is_file() and (h := hits(expanded(path.read_bytes()), identifiers)):
            found[str(path.relative_to(stack.data_dir))] = h
    if h := hits(database_text(stack), identifiers):
        found["database"] = h
    if h := hits(broker_text(stack), identifiers):
        found["broker"] = h
    for log in sorted(stack.logs.glob("*")):
        if h := hits(log.read_bytes(), identifiers):
            found[f"log {log.name}"] = h
    assert found == {}, found
    assert hits(archive, identifiers) == identifiers  # the search finds every one of them where they were


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
