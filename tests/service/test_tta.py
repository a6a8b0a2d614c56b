"""Test-time augmentation at prediction (issue 12): off by default and then changes nothing; on, the answer
averages the logits of a few anatomy-safe variants and says how many, over the running stack."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hilum.db import session_scope
from hilum.registry import register_version
from hilum.storage import Storage
from hilum.tables import Dataset, Job
from models.artifact import ClassifierArtifact
from models.backbones import create_backbone, model_args
from pipelines.infer import Predictor
from pipelines.model_input import prepare, preprocessing_of
from pipelines.synthetic import render_cxr
from pipelines.tta import VARIANTS, average_logits, tta_batch
from tests.conftest import Stack

pytestmark = pytest.mark.e2e

MODEL = "tta-cxr"
PREPROCESSING = {
    "max_side": 96,
    "image_size": 48,
    "mean": 0.5,
    "std": 0.25,
    "interpolation": "bilinear-antialias",
    "pad": "centre-square",
    "chest_check": True,
}


def film(seed: int) -> bytes:
    image = render_cxr(np.random.default_rng(seed), pneumonia=True, size=96)
    buf = io.BytesIO()
    Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_variants_start_with_the_film_itself_and_never_mirror_it() -> None:
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, :, :8] = 1.0  # bright left edge
    out = tta_batch(x)
    assert out.shape == (len(VARIANTS) * 2, 1, 32, 32)
    assert torch.equal(out[:2], x)
    for v in out.view(len(VARIANTS), 2, 1, 32, 32):
        assert v[..., :16].sum() > v[..., 16:].sum()  # the bright side stays on the left: no flip
    assert not torch.equal(out[2:4], x)
    logits = torch.arange(len(VARIANTS) * 2 * 3, dtype=torch.float32).view(-1, 3)
    assert torch.equal(average_logits(logits, 2)[0], logits[0::2].mean(0))


@pytest.fixture(scope="module")
def version(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered random-weight version of MODEL (serving, not skill, is under test); its artifact path."""
    torch.manual_seed(0)
    net = create_backbone("test_resnet", weights="none", num_classes=2)
    path = tmp_path_factory.mktemp("tta") / "model.pt"
    ClassifierArtifact(
        state_dict=net.state_dict(),
        backbone="test_resnet",
        model_args=model_args("test_resnet", 2),
        class_names=["NORMAL", "PNEUMONIA"],
        image_size=48,
        mean=0.5,
        std=0.25,
        positive_class="PNEUMONIA",
        threshold=0.5,
        preprocessing=PREPROCESSING,
        weights="none",
    ).save(path)
    storage = Storage(stack.data_dir)
    with session_scope(stack.database_url) as session:
        session.add(Dataset(id="tta-dataset", name="tta", status="ready"))
        job = Job(id="tta-job", dataset_id="tta-dataset", status="succeeded", spec={}, model_name=MODEL)
        session.add(job)
        session.flush()
        row = register_version(
            session, storage, job, artifact=path, backbone="test_resnet", class_names=[], threshold=0.5, metrics={}
        )
        return storage.resolve(row.artifact_path)


def test_tta_off_changes_nothing_and_on_averages_variants(stack: Stack, version: Path) -> None:
    data = film(1)
    url = f"/v1/models/{MODEL}/predict?version=1"
    with stack.client() as client:
        plain = client.post(url, files={"file": ("a.png", data, "image/png")})
        off = client.post(url + "&tta=false", files={"file": ("a.png", data, "image/png")})
        on = client.post(url + "&tta=true", files={"file": ("a.png", data, "image/png")})
    assert plain.status_code == off.status_code == on.status_code == 200, (plain.text, on.text)
    assert plain.json()["tta"] is None and off.json()["tta"] is None
    assert off.json()["probabilities"] == plain.json()["probabilities"]
    assert on.json()["tta"] == len(VARIANTS)
    assert on.json()["probabilities"] != plain.json()["probabilities"]
    # The served answer is the in-process average of the variants' logits.
    predictor = Predictor.load(version)
    pixels = prepare(data, preprocessing_of(predictor.artifact)).pixels
    expected = predictor.predict([pixels], tta=True)[0].probabilities
    assert on.json()["probabilities"] == pytest.approx(expected, abs=1e-5)


def test_tta_in_the_batch_form_and_a_bad_value_is_named(stack: Stack, version: Path) -> None:
    with stack.client() as client:
        r = client.post(
            f"/v1/models/{MODEL}/predict/batch?version=1&tta=true",
            files=[("files", ("a.png", film(2), "image/png")), ("files", ("b.png", film(3), "image/png"))],
        )
        bad = client.post(f"/v1/models/{MODEL}/predict?version=1&tta=often", files={"file": ("a.png", film(2))})
    assert r.status_code == 200, r.text
    assert [item["prediction"]["tta"] for item in r.json()["results"]] == [len(VARIANTS)] * 2
    assert bad.status_code == 422 and "tta" in bad.text
