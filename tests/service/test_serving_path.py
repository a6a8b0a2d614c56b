"""Serving takes every input parameter from the version's artifact (never today's settings): an artifact
trained on films bounded to 64 px is answered, and its heatmap drawn, at 64 px whatever the server's
HILUM_MAX_IMAGE_SIDE. In-process: the registry and predictions modules take no FastAPI types."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hilum.db import session_scope
from hilum.migrate import upgrade_to_head
from hilum.registry import register_version
from hilum.storage import Storage
from hilum.tables import Dataset, Job
from pipelines.synthetic import render_cxr
from service.batcher import MicroBatcher
from service.domain import predictions, registry
from service.errors import Invalid
from service.model_cache import ModelCache
from tests.artifacts import tiny_artifact

PREPROCESSING = {
    "max_side": 64,
    "image_size": 32,
    "mean": 0.5,
    "std": 0.25,
    "interpolation": "bilinear-antialias",
    "pad": "centre-square",
    "chest_check": True,
}


def film(h: int, w: int) -> bytes:
    image = render_cxr(np.random.default_rng(0), pneumonia=True, size=max(h, w))[:h, :w]
    buf = io.BytesIO()
    Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def serving(tmp_path: Path) -> tuple[str, predictions.Serving]:
    url = f"sqlite:///{tmp_path / 'hilum.db'}"
    upgrade_to_head(url)
    storage = Storage(tmp_path / "data")
    storage.ensure()
    path = tiny_artifact(tmp_path / "model.pt", seed=None, preprocessing=PREPROCESSING, weights="none")
    with session_scope(url) as session:
        session.add(Dataset(id="d1", name="d", status="ready"))
        job = Job(id="j1", dataset_id="d1", status="running", spec={}, model_name="m")
        session.add(job)
        session.flush()
        register_version(
            session, storage, job, artifact=path, backbone="test_resnet", class_names=[], threshold=0.5, metrics={}
        )
    cache = ModelCache(max_models=1)
    return url, predictions.Serving(
        storage, cache, MicroBatcher(enabled=False), max_image_bytes=2**24, batch_max_files=4
    )


def test_the_artifacts_preprocessing_drives_serving(serving: tuple[str, predictions.Serving]) -> None:
    url, srv = serving
    options = predictions.Options(heatmap=True, heatmap_class="NORMAL", heatmap_array=True)
    with session_scope(url) as session:
        resolved = registry.resolve(session, "m")
        answer = asyncio.run(
            predictions.predict_and_record(
                session, resolved, film(200, 160), serving=srv, options=options, key_id="k", started=time.perf_counter()
            )
        )
    heatmap = answer.heatmap
    assert heatmap is not None and heatmap.class_name == "NORMAL"
    assert (heatmap.height, heatmap.width) == (64, 51)  # the artifact's max_side (64), aspect ratio kept
    with Image.open(io.BytesIO(base64.b64decode(heatmap.png_base64))) as im:
        assert im.size == (51, 64)
    assert np.frombuffer(base64.b64decode(heatmap.array_b64 or ""), dtype="<f2").size == 64 * 51
    assert answer.pretrained is False and any("random weights" in w for w in answer.warnings)
    assert answer.threshold == 0.5 and answer.label in {"NORMAL", "PNEUMONIA"}


def test_unusable_upload_is_refused_with_the_reason(serving: tuple[str, predictions.Serving]) -> None:
    url, srv = serving
    with session_scope(url) as session, pytest.raises(Invalid, match="cannot use this file: not a PNG"):
        asyncio.run(predictions.answer(session, registry.resolve(session, "m"), b"not an image", serving=srv))
