"""A hostile zip in a batch prediction: damaged members fail alone, the rest is read (issue 15)."""

from __future__ import annotations

import io
import random
import stat
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.synthetic import render_cxr, write_zip
from service.domain.predictions import Serving, batch_items
from tests.conftest import Stack, wait_for


def serving(max_image_bytes: int = 1_000_000, batch_max_files: int = 16) -> Serving:
    none: Any = None
    return Serving(
        storage=none, cache=none, batcher=none, max_image_bytes=max_image_bytes, batch_max_files=batch_max_files
    )


def corrupted_zip(compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        rng = random.Random(0)  # incompressible members: the flipped bytes stay inside the damaged one
        zf.writestr("good.png", b"\x89PNG" + rng.randbytes(2000))
        zf.writestr("bad.png", b"\x89PNG" + rng.randbytes(2000))
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("bad.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    for i in range(start, start + 40):  # flip member bytes, not the directory
        data[i] ^= 0x5A
    return bytes(data)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_damaged_member_of_a_batch_zip_fails_alone(compression: int) -> None:
    items = dict(batch_items([("batch.zip", corrupted_zip(compression))], serving=serving()))
    assert isinstance(items["good.png"], bytes)
    assert isinstance(items["bad.png"], str) and "damaged" in items["bad.png"]


def test_truncated_batch_zip_is_an_error_item_not_a_crash() -> None:
    data = corrupted_zip(zipfile.ZIP_STORED)[:-30]  # the central directory is cut
    items = batch_items([("batch.zip", data)], serving=serving())
    assert len(items) == 1 and isinstance(items[0][1], str) and "zip" in items[0][1]


# --------------------------------------------------------------------------- over real HTTP

SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)  # zip handling is database-blind
MODEL = "batch-zip"
MAX_FILES = 64  # Settings.batch_max_files, the stack's default


def film() -> bytes:
    image = render_cxr(np.random.default_rng(3), pneumonia=True, size=48)
    buf = io.BytesIO()
    Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def zip_of(*members: tuple[str | zipfile.ZipInfo, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def damaged_member() -> bytes:
    rng = random.Random(1)
    data = bytearray(zip_of(("good.png", film()), ("bad.png", b"\x89PNG" + rng.randbytes(4000))))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("bad.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    for i in range(start, start + 40):
        data[i] ^= 0x5A
    return bytes(data)


def symlink() -> bytes:
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return zip_of((link, b"/etc/passwd"), ("good.png", film()))


def lying_header() -> bytes:
    """A member that declares 1,000 bytes and inflates to 8 MB (its sizes patched in both headers)."""
    data = bytearray(zip_of(("bomb.png", b"\0" * (8 << 20))))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("bomb.png")
    local = info.header_offset
    central = data.rindex(b"PK\x01\x02")
    data[local + 22 : local + 26] = struct.pack("<I", 1000)
    data[central + 24 : central + 28] = struct.pack("<I", 1000)
    return bytes(data)


def deflate64() -> bytes:
    """A member marked as Deflate64 (method 9: Windows makes them; Python's zipfile cannot read them)."""
    data = bytearray(zip_of(("odd.png", film()), ("good.png", film()), compression=zipfile.ZIP_STORED))
    local, central = 0, data.index(b"PK\x01\x02")
    data[local + 8 : local + 10] = struct.pack("<H", 9)
    data[central + 10 : central + 12] = struct.pack("<H", 9)
    return bytes(data)


# name -> (zip bytes, what an error must say)
HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "damaged-member": (damaged_member, "damaged"),
    "truncated": (lambda: zip_of(("good.png", film()))[:-30], "the zip is damaged"),
    "bomb": (lambda: zip_of(("bomb.png", b"\0" * (40 << 20))), "zip bomb"),
    "lying-header": (lying_header, "damaged"),  # read stops at the declared size; the CRC then fails
    "too-many-members": (lambda: zip_of(*((f"{i}.png", b"x") for i in range(MAX_FILES + 1))), f"{MAX_FILES}"),
    "nested-zip": (
        lambda: zip_of(("inner.zip", zip_of(("a.png", film()))), ("good.png", film())),
        "a zip inside the zip is not opened",
    ),
    "path-traversal": (lambda: zip_of(("../../evil.png", film())), ".."),
    "absolute-path": (lambda: zip_of(("/tmp/evil.png", film())), "absolute path"),
    "symlink": (symlink, "symbolic link"),
    "non-image": (
        lambda: zip_of(("notes.txt", b"patient notes, not a film"), ("good.png", film())),
        "not a PNG, JPEG or DICOM",
    ),
    "deflate64-member": (deflate64, "compressed with a method that cannot be read"),
    "empty": (lambda: zip_of(), "no usable files"),
}


@pytest.fixture(scope="module")
def model(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny registered model (one epoch: batch handling, not accuracy, is under test)."""
    upload = write_zip(tmp_path_factory.mktemp("batch-zip") / "cxr.zip", n_per_class=10, size=48, seed=4)
    spec = {"backbone": "test_resnet", "strategy": "frozen", "epochs": 1, "image_size": 32, "batch_size": 8}
    with stack.client() as client:
        with upload.open("rb") as fh:
            r = client.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")}, data={"name": "bz"})
        assert r.status_code == 202, r.text
        dataset = wait_for(client, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["status"] == "ready", dataset
        r = client.post("/v1/jobs", json={**spec, "dataset_id": dataset["id"], "model_name": MODEL})
        assert r.status_code == 202, r.text
        job = wait_for(client, f"/v1/jobs/{r.json()['id']}", {"succeeded", "failed", "cancelled"}, timeout=300)
        assert job["status"] == "succeeded", job
    return MODEL


@SQLITE_ONLY
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_batch_zip_gets_a_named_error_never_a_500(stack: Stack, model: str, case: str) -> None:
    build, says = HOSTILE[case]
    with stack.client() as client:
        r = client.post(
            f"/v1/models/{model}/predict/batch",
            params={"version": 1},
            files=[("files", ("batch.zip", build(), "application/zip"))],
        )
        assert r.status_code < 500, r.text
        if r.status_code == 200:
            results = r.json()["results"]
            errors = [item["error"] for item in results if not item["ok"]]
            assert errors and any(says in e for e in errors), results
            assert all(item["ok"] for item in results if item["file"] == "good.png"), results
        else:
            assert 400 <= r.status_code < 500 and says in r.json()["detail"], r.text
        assert client.get("/healthz").status_code == 200  # the server is still up and answering
        ok = client.post(
            f"/v1/models/{model}/predict/batch",
            params={"version": 1},
            files=[("files", ("f.png", film(), "image/png"))],
        )
        assert ok.status_code == 200 and ok.json()["results"][0]["ok"], ok.text
