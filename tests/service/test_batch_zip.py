"""A hostile zip in a batch prediction: damaged members fail alone, the rest is read (issue 15)."""

from __future__ import annotations

import io
import random
import zipfile
from typing import Any

import pytest

from service.domain.predictions import Serving, batch_items


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
