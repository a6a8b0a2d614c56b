"""The model registry over real HTTP: versions, aliases (also moved under load), predictions on every
accepted format against the in-process pipeline, heatmaps, batches, refusals, the prediction log,
model cards and downloads. Two versions of one model are trained once for the module."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from hilum.storage import Storage
from models.artifact import ClassifierArtifact
from pipelines.imaging import decode_image
from pipelines.infer import Predictor
from pipelines.preprocess import to_model_input
from pipelines.synthetic import dicom_bytes, render_cxr, write_zip
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

MODEL = "registry-cxr"
PER_CLASS = 30
# The server runs fp16 on a GPU (in batches of any size): compare within fp16's precision there, fp32's here.
PROB_TOL = 2e-2 if torch.cuda.is_available() else 1e-5
ONNX_TOL = 1e-4


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, dict[str, str]]:
    """{role: {"key": secret, "id": key id}} for admin, staff and clinician."""
    out: dict[str, dict[str, str]] = {}
    with stack.client() as admin:
        for role in ("staff", "clinician"):
            r = admin.post("/v1/keys", json={"name": f"registry-{role}", "role": role})
            assert r.status_code == 201, r.text
            out[role] = {"key": r.json()["key"], "id": r.json()["id"]}
        listed = admin.get("/v1/keys").json()
    admin_row = next(k for k in listed if k["role"] == "admin" and stack.admin_key.startswith(k["prefix"]))
    out["admin"] = {"key": stack.admin_key, "id": admin_row["id"]}
    return out


@pytest.fixture(scope="module")
def trained(stack: Stack, keys: dict[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Versions 1 and 2 of MODEL, trained on one small synthetic dataset; returns the dataset.

    A head on frozen random features for 20 cheap epochs: both versions learn enough to be fit for use
    (an unfit version could not take the production alias; test_trust.py covers that)."""
    upload = write_zip(tmp_path_factory.mktemp("registry") / "cxr.zip", n_per_class=PER_CLASS, size=96, seed=3)
    spec = {"backbone": "test_resnet", "image_size": 64, "batch_size": 16, "model_name": MODEL, "lr": 3e-2}
    with stack.client(keys["staff"]["key"]) as staff:
        with upload.open("rb") as fh:
            r = staff.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")}, data={"name": "reg"})
        assert r.status_code == 202, r.text
        dataset = wait_for(staff, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["status"] == "ready", dataset
        for extra in ({"strategy": "frozen", "epochs": 20, "seed": 1}, {"strategy": "frozen", "epochs": 20, "seed": 3}):
            r = staff.post("/v1/jobs", json={**spec, **extra, "dataset_id": dataset["id"]})
            assert r.status_code == 202, r.text
            job = wait_for(staff, f"/v1/jobs/{r.json()['id']}", {"succeeded", "failed", "cancelled"}, timeout=300)
            assert job["status"] == "succeeded", job
    return dataset


def artifact_path(stack: Stack, version: int) -> Path:
    return Storage(stack.data_dir).model_version_dir(MODEL, version) / "model.pt"


@pytest.fixture(scope="module")
def predictors(stack: Stack, trained: dict) -> dict[int, Predictor]:
    """The in-process pipeline for each version, loaded from the stack's own data dir."""
    return {v: Predictor.load(artifact_path(stack, v), device="auto") for v in (1, 2)}  # as the server runs it


def cxr(seed: int, *, pneumonia: bool = True, size: int = 96) -> np.ndarray:
    return render_cxr(np.random.default_rng(seed), pneumonia=pneumonia, size=size)


def encode(image01: np.ndarray, fmt: str) -> bytes:
    u8 = np.rint(np.clip(image01, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, mode="L").save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def utc(stamp: str) -> datetime:
    """An API timestamp as an aware UTC datetime (SQLite hands back naive UTC ones)."""
    when = datetime.fromisoformat(stamp)
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def predict(
    client: httpx.Client, data: bytes, name: str = "x.png", model: str = MODEL, **params: Any
) -> httpx.Response:
    return client.post(f"/v1/models/{model}/predict", params=params, files={"file": (name, data)})


# --------------------------------------------------------------------------- 1. versions and aliases


def test_versions_are_listed_with_their_figures(stack: Stack, keys: dict, trained: dict) -> None:
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = clinician.get(f"/v1/models/{MODEL}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["latest_version"] == 2
        assert [v["version"] for v in body["versions"]] == [1, 2]
        for v in body["versions"]:
            assert v["model_name"] == MODEL and v["backbone"] == "test_resnet"
            assert v["class_names"] == ["NORMAL", "PNEUMONIA"]
            assert 0.0 <= v["threshold"] <= 1.0
            assert 0.0 <= v["metrics"]["val"]["accuracy"] <= 1.0 and v["metrics"]["test"] is not None
            assert abs(utc(v["created_at"]) - datetime.now(UTC)) < timedelta(hours=1)
        assert MODEL in {m["name"] for m in clinician.get("/v1/models").json()}
        assert body["aliases"] == {}
        r = predict(clinician, encode(cxr(20), "PNG"))
        assert r.status_code == 200 and r.json()["version"] == 2  # no production alias yet: the newest version

        r = clinician.get("/v1/models/no-such-model")
        assert r.status_code == 404 and "no-such-model" in r.json()["detail"]


def test_aliases_choose_the_version(stack: Stack, keys: dict, trained: dict) -> None:
    png = encode(cxr(21), "PNG")
    started = datetime.now(UTC)
    with stack.client(keys["clinician"]["key"]) as clinician, stack.client(keys["staff"]["key"]) as staff:
        r = clinician.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1})
        assert r.status_code == 403, r.text
        r = staff.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1 and r.json()["updated_by"] == keys["staff"]["id"]
        assert clinician.get(f"/v1/models/{MODEL}").json()["aliases"]["production"] == 1

        assert predict(clinician, png).json()["version"] == 1  # default: the production alias
        assert predict(clinician, png, alias="production").json()["version"] == 1
        assert predict(clinician, png, version=2).json()["version"] == 2
        r = clinician.post(f"/v1/models/{MODEL}/predict", data={"version": "2"}, files={"file": ("x.png", png)})
        assert r.status_code == 200 and r.json()["version"] == 2  # version as a form field

        unknown = [
            ("nope-model", {}, "model 'nope-model' not found"),
            (MODEL, {"version": 9}, f"model '{MODEL}' has no version 9"),
            (MODEL, {"alias": "canary"}, f"model '{MODEL}' has no alias 'canary'"),
        ]
        for model, params, message in unknown:
            r = predict(clinician, png, model=model, **params)
            assert r.status_code == 404 and message in r.json()["detail"], (params, r.text)
        r = predict(clinician, png, model="nope-model", version=1)
        assert r.status_code == 404 and "model 'nope-model' not found" in r.json()["detail"]
        r = predict(clinician, png, version=2, alias="production")
        assert r.status_code == 422 and "not both" in r.json()["detail"]

        r = staff.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 9})
        assert r.status_code == 404 and "version 9" in r.json()["detail"]
        r = staff.put("/v1/models/nope-model/aliases/production", json={"version": 1})
        assert r.status_code == 404 and "nope-model" in r.json()["detail"]
        r = staff.put(f"/v1/models/{MODEL}/aliases/Not Valid", json={"version": 1})
        assert r.status_code == 422 and "not valid" in r.json()["detail"]
        r = staff.put(f"/v1/models/{MODEL}/aliases/history", json={"version": 1})
        assert r.status_code == 422 and "reserved" in r.json()["detail"]
        r = staff.put(f"/v1/models/{MODEL}/aliases/staging", json={"version": 2})
        assert r.status_code == 200
        assert predict(clinician, png, alias="staging").json()["version"] == 2

        assert clinician.get(f"/v1/models/{MODEL}/aliases/history").status_code == 403
        r = staff.get(f"/v1/models/{MODEL}/aliases/history")
        assert r.status_code == 200, r.text
        events = r.json()
        first = next(e for e in events if e["alias"] == "production")
        assert (first["from_version"], first["to_version"]) == (None, 1)
        assert first["actor"] == keys["staff"]["id"]
        when = utc(first["created_at"])
        assert started - timedelta(seconds=5) <= when <= datetime.now(UTC) + timedelta(seconds=5)
        assert [(e["alias"], e["to_version"]) for e in events][-1] == ("staging", 2)
        assert staff.get("/v1/models/nope-model/aliases/history").status_code == 404


# --------------------------------------------------------------------------- 2. alias move under load


def test_alias_move_during_a_stream_of_requests(stack: Stack, keys: dict, trained: dict) -> None:
    png = encode(cxr(22), "PNG")
    with stack.client(keys["admin"]["key"]) as admin:
        assert admin.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1}).status_code == 200
    results: list[tuple[float, float, int, int | None]] = []  # (sent, answered, status, version)
    stop = threading.Event()

    def fire() -> None:
        with stack.client(keys["clinician"]["key"], timeout=30) as client:
            deadline = time.monotonic() + 120  # a bound, never the signal: the test stops us
            while not stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    r = predict(client, png)
                    status, version = r.status_code, r.json().get("version") if r.status_code == 200 else None
                except httpx.HTTPError:
                    status, version = -1, None
                results.append((sent, time.monotonic(), status, version))

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()

    def answered(count: Callable[[], int], at_least: int = 5) -> None:
        deadline = time.monotonic() + 60
        while count() < at_least:
            assert time.monotonic() < deadline, f"only {count()} answers in 60 s"
            time.sleep(0.05)

    try:
        answered(lambda: len(results))  # predictions answered before the move...
        with stack.client(keys["staff"]["key"]) as staff:
            move_sent = time.monotonic()
            r = staff.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 2})
            move_done = time.monotonic()
        assert r.status_code == 200, r.text
        answered(lambda: sum(sent > move_done for sent, *_ in list(results)))  # ...and sent after it
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert all(status == 200 for _, _, status, _ in results), [r for r in results if r[2] != 200][:5]
    before = [v for sent, done, _, v in results if done < move_sent]
    after = [v for sent, done, _, v in results if sent > move_done]
    assert before and after, (len(before), len(after))
    assert set(before) == {1}
    assert set(after) == {2}


def test_concurrent_alias_moves_keep_a_consistent_history(stack: Stack, keys: dict, trained: dict) -> None:
    """Racing PUTs on a new alias: none fails, and the history is one unbroken chain of moves."""

    def move(version: int) -> httpx.Response:
        with stack.client(keys["staff"]["key"]) as staff:
            return staff.put(f"/v1/models/{MODEL}/aliases/race", json={"version": version})

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(move, [1, 2, 1, 2, 1, 2, 1, 2]))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses if r.status_code != 200]
    with stack.client(keys["staff"]["key"]) as staff:
        events = [e for e in staff.get(f"/v1/models/{MODEL}/aliases/history").json() if e["alias"] == "race"]
        current = staff.get(f"/v1/models/{MODEL}").json()["aliases"]["race"]
    assert len(events) == 8
    chain = [e["from_version"] for e in events] + [current]
    assert chain[0] is None and chain[1:] == [e["to_version"] for e in events]


# --------------------------------------------------------------------------- 3. every format = the pipeline


def formats_of(image01: np.ndarray) -> dict[str, bytes]:
    return {
        "x.png": encode(image01, "PNG"),
        "x.jpg": encode(image01, "JPEG"),
        "mono2.dcm": dicom_bytes(image01, photometric="MONOCHROME2", bits_stored=12, modality="DX"),
        "mono1.dcm": dicom_bytes(image01, photometric="MONOCHROME1", bits_stored=12, modality="CR"),
    }


def test_every_format_answers_as_the_pipeline(
    stack: Stack, keys: dict, predictors: dict[int, Predictor], trained: dict
) -> None:
    files = formats_of(cxr(31))
    pixels = {name: decode_image(data).pixels for name, data in files.items()}
    np.testing.assert_array_equal(pixels["mono1.dcm"], pixels["mono2.dcm"])  # the MONOCHROME1 twin decodes alike
    with stack.client(keys["clinician"]["key"]) as clinician:
        for version in (1, 2):
            artifact = predictors[version].artifact
            for name, data in files.items():
                r = predict(clinician, data, name=name, version=version)
                assert r.status_code == 200, (name, r.text)
                answer = r.json()
                expected = predictors[version].predict([pixels[name]])[0]
                assert answer["version"] == version
                assert set(answer["probabilities"]) == set(expected.probabilities)
                for cls, p in expected.probabilities.items():
                    assert answer["probabilities"][cls] == pytest.approx(p, abs=PROB_TOL), (name, version, cls)
                assert answer["label_withheld"] is (expected.in_distribution is False)
                assert answer["label"] == (None if answer["label_withheld"] else expected.label)
                assert answer["threshold"] == pytest.approx(artifact.threshold)
                assert answer["positive_class"] == "PNEUMONIA"
                op = answer["operating_point"]
                assert op["sensitivity"] == pytest.approx(artifact.operating_point["sensitivity"])
                assert op["specificity"] == pytest.approx(artifact.operating_point["specificity"])
                assert answer["input_sha256"] == hashlib.sha256(data).hexdigest()
                assert answer["prediction_id"]
                assert answer["heatmap"] is None


# --------------------------------------------------------------------------- 4. heatmap


@pytest.mark.parametrize("shape", [(96, 96), (120, 84), (640, 560)], ids=["square", "portrait", "large"])
def test_heatmap_is_a_png_of_the_image(stack: Stack, keys: dict, trained: dict, shape: tuple[int, int]) -> None:
    h, w = shape
    data = encode(cxr(41, size=max(h, w))[:h, :w], "PNG")
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = predict(clinician, data, version=2, heatmap="true")
    assert r.status_code == 200, r.text
    png = base64.b64decode(r.json()["heatmap"]["png_base64"], validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # The input's size; one larger than the server's max_image_side (512) is downscaled like the model input.
    expected = (w, h) if max(h, w) <= 512 else (round(w * 512 / max(h, w)), round(h * 512 / max(h, w)))
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == expected
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 1.0 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 10


# --------------------------------------------------------------------------- 5. batch


def test_batch_of_files_fails_bad_ones_alone(
    stack: Stack, keys: dict, predictors: dict[int, Predictor], trained: dict
) -> None:
    good = {"a.png": encode(cxr(51), "PNG"), "b.png": encode(cxr(52, pneumonia=False), "PNG")}
    files = [("files", (n, d, "image/png")) for n, d in good.items()]
    files.append(("files", ("junk.bin", b"\x00garbage, not an image" * 10, "application/octet-stream")))
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = clinician.post(f"/v1/models/{MODEL}/predict/batch", params={"version": 2}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == (MODEL, 2)
    by_file = {item["file"]: item for item in body["results"]}
    assert set(by_file) == {"a.png", "b.png", "junk.bin"}
    assert by_file["junk.bin"]["ok"] is False and "not a PNG, JPEG or DICOM" in by_file["junk.bin"]["error"]
    assert by_file["junk.bin"]["prediction"] is None
    with stack.client(keys["admin"]["key"]) as admin:
        logged = {p["id"] for p in admin.get("/v1/predictions", params={"model": MODEL, "limit": 1000}).json()}
    assert {by_file[name]["prediction"]["prediction_id"] for name in good} <= logged
    for name, data in good.items():
        item = by_file[name]
        assert item["ok"] is True and item["error"] is None, item
        expected = predictors[2].predict([decode_image(data).pixels])[0]
        got = item["prediction"]
        assert got["version"] == 2 and got["input_sha256"] == hashlib.sha256(data).hexdigest()
        assert got["prediction_id"]
        for cls, p in expected.probabilities.items():
            assert got["probabilities"][cls] == pytest.approx(p, abs=PROB_TOL)


def test_batch_of_one_zip(stack: Stack, keys: dict, predictors: dict[int, Predictor], trained: dict) -> None:
    images = {
        "scans/a.png": encode(cxr(61), "PNG"),
        "scans/b.jpg": encode(cxr(62), "JPEG"),
        "scans/c.dcm": dicom_bytes(cxr(63), modality="DX"),
        "scans/ct.dcm": dicom_bytes(cxr(64), modality="CT"),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in images.items():
            zf.writestr(name, data)
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = clinician.post(
            f"/v1/models/{MODEL}/predict/batch",
            params={"alias": "production"},
            files={"files": ("scans.zip", buf.getvalue(), "application/zip")},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == clinician.get(f"/v1/models/{MODEL}").json()["aliases"]["production"]
        r = clinician.post(
            f"/v1/models/{MODEL}/predict/batch", params={"alias": "nope"}, files={"files": ("a.png", b"x")}
        )
        assert r.status_code == 404 and "nope" in r.json()["detail"]
    by_file = {Path(item["file"]).name: item for item in body["results"]}
    assert set(by_file) == {"a.png", "b.jpg", "c.dcm", "ct.dcm"}
    assert by_file["ct.dcm"]["ok"] is False and "CT" in by_file["ct.dcm"]["error"]
    for name in ("a.png", "b.jpg", "c.dcm"):
        item = by_file[name]
        assert item["ok"] is True, item
        data = images[f"scans/{name}"]
        expected = predictors[body["version"]].predict([decode_image(data).pixels])[0]
        for cls, p in expected.probabilities.items():
            assert item["prediction"]["probabilities"][cls] == pytest.approx(p, abs=PROB_TOL)


# --------------------------------------------------------------------------- 6. refusals


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 10), 128, np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


REFUSED = {
    "ct.dcm": (lambda: dicom_bytes(cxr(71), modality="CT"), "Modality is CT"),
    "mr.dcm": (lambda: dicom_bytes(cxr(72), modality="MR"), "Modality is MR"),
    "knee.dcm": (lambda: dicom_bytes(cxr(73), modality="DX", body_part="KNEE"), "BodyPartExamined is KNEE"),
    "tiny.png": (tiny_png, "10x10"),
    "notes.txt": (lambda: b"this is a clinical note, not an image", "not a PNG, JPEG or DICOM"),
    "broken.png": (lambda: encode(cxr(74), "PNG")[:200], "damaged"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unusable_inputs_are_refused_with_a_reason(stack: Stack, keys: dict, trained: dict, name: str) -> None:
    make, reason = REFUSED[name]
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = predict(clinician, make(), name=name)
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]


@pytest.mark.parametrize("body_part", ["CHEST", ""], ids=["chest", "absent"])
def test_chest_or_unstated_body_part_is_accepted(stack: Stack, keys: dict, trained: dict, body_part: str) -> None:
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = predict(clinician, dicom_bytes(cxr(75), modality="DX", body_part=body_part), name="x.dcm")
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- 7. prediction log


def test_prediction_log_is_admin_only_and_holds_no_pixels(stack: Stack, keys: dict, trained: dict) -> None:
    data = encode(cxr(81), "PNG")
    with stack.client(keys["clinician"]["key"]) as clinician:
        answer = predict(clinician, data, version=1, label_when_ood="true").json()
        assert clinician.get("/v1/predictions").status_code == 403
    with stack.client(keys["staff"]["key"]) as staff:
        assert staff.get("/v1/predictions").status_code == 403
    with stack.client(keys["admin"]["key"]) as admin:
        r = admin.get("/v1/predictions", params={"model": MODEL, "limit": 1000})
    assert r.status_code == 200, r.text
    log = r.json()
    assert log and {p["model_name"] for p in log} == {MODEL}
    entry = next(p for p in log if p["id"] == answer["prediction_id"])
    assert entry["version"] == 1 and entry["label"] == answer["label"]
    assert entry["input_sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["key_id"] == keys["clinician"]["id"] and entry["source_format"] == "png"
    assert entry["probabilities"] == pytest.approx(answer["probabilities"])
    allowed = {"id", "created_at", "key_id", "model_name", "version", "input_sha256", "source_format", "label"}
    assert set(entry) <= allowed | {"probabilities", "latency_ms"}
    assert len(r.content) < 1000 * len(log)  # no image data in the log
    assert 1 in {p["version"] for p in log}


# --------------------------------------------------------------------------- 8. card and downloads


def test_model_card(stack: Stack, keys: dict, trained: dict) -> None:
    with stack.client(keys["clinician"]["key"]) as clinician:
        r = clinician.get(f"/v1/models/{MODEL}/versions/1/card")
        assert r.status_code == 200, r.text
        card = r.json()
        assert clinician.get(f"/v1/models/{MODEL}/versions/9/card").status_code == 404
        r = clinician.get("/v1/models/nope-model/versions/1/card")
        assert r.status_code == 404 and "nope-model" in r.json()["detail"]
    assert (card["model"], card["version"]) == (MODEL, 1)
    assert "chest" in card["intended_use"].lower()
    data = card["training_data"]
    assert data["dataset_id"] == trained["id"] and data["class_counts"] == {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}
    assert data["images"] == 2 * PER_CLASS
    assert card["training"]["job_id"] and card["training"]["spec"]["seed"] == 1
    for split in ("validation", "test"):
        assert 0.0 <= card[split]["accuracy"] <= 1.0 and card[split]["auroc"] is not None, card[split]
    op = card["operating_point"]
    assert 0.0 <= op["threshold"] <= 1.0 and op["sensitivity"] is not None and op["specificity"] is not None
    assert isinstance(card["known_limits"], list) and len(card["known_limits"]) >= 3


def test_artifact_download_loads_weights_only(
    stack: Stack, keys: dict, predictors: dict[int, Predictor], tmp_path: Path
) -> None:
    with stack.client(keys["staff"]["key"]) as staff:
        r = staff.get(f"/v1/models/{MODEL}/versions/2/artifact")
        assert r.status_code == 200, r.text
        assert staff.get(f"/v1/models/{MODEL}/versions/9/artifact").status_code == 404
    with stack.client(keys["clinician"]["key"]) as clinician:
        assert clinician.get(f"/v1/models/{MODEL}/versions/2/artifact").status_code == 403
    path = tmp_path / "model.pt"
    path.write_bytes(r.content)
    artifact = ClassifierArtifact.load(path)  # torch.load(weights_only=True)
    assert artifact.class_names == ["NORMAL", "PNEUMONIA"] and artifact.backbone == "test_resnet"
    pixels = decode_image(encode(cxr(91), "PNG")).pixels
    np.testing.assert_allclose(
        Predictor(artifact, device="auto").probabilities([pixels]), predictors[2].probabilities([pixels]), atol=1e-7
    )


def test_onnx_download_runs_like_the_predictor(
    stack: Stack, keys: dict, predictors: dict[int, Predictor], tmp_path: Path
) -> None:
    import onnxruntime as ort

    def fetch(_: int) -> httpx.Response:
        with stack.client(keys["staff"]["key"]) as staff:
            return staff.get(f"/v1/models/{MODEL}/versions/1/onnx")

    with ThreadPoolExecutor(3) as pool:  # concurrent first requests all get a complete export
        responses = list(pool.map(fetch, range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text[:200] for r in responses]
    for i, r in enumerate(responses):
        (tmp_path / f"model{i}.onnx").write_bytes(r.content)
    predictor = predictors[1]
    a = predictor.artifact
    images = [decode_image(formats_of(cxr(seed))[name]).pixels for seed, name in ((92, "x.png"), (93, "mono1.dcm"))]
    x = np.stack([to_model_input(im, image_size=a.image_size, mean=a.mean, std=a.std).numpy() for im in images])
    expected = predictor.probabilities(images)
    for i in range(len(responses)):
        session = ort.InferenceSession(str(tmp_path / f"model{i}.onnx"), providers=["CPUExecutionProvider"])
        (probs,) = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
        np.testing.assert_allclose(probs, expected, atol=ONNX_TOL)
    with stack.client(keys["staff"]["key"]) as staff:
        assert staff.get(f"/v1/models/{MODEL}/versions/9/onnx").status_code == 404
