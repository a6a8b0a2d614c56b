"""The web app in real Chromium against a live stack: each role's journey end to end.

Every page a test opens records its requests and console errors; the ``web`` fixture fails a test whose
pages left the origin or logged an error (a test that provokes a refusal allows that one message).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from sqlalchemy import update

from hilum.db import session_scope
from hilum.tables import WebSession
from pipelines.synthetic import dicom_bytes, render_cxr, write_zip
from tests.conftest import Stack, wait_for
from tests.web.conftest import TABLET, Web, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

MODEL = "webapi"
# Small enough for two CPU cores, large enough to pass the fitness checks (a version that fails them
# cannot be promoted nor answer by default): about 20 s of training here.
FIT_SPEC: dict[str, Any] = {
    "backbone": "test_resnet",
    "image_size": 48,
    "batch_size": 16,
    "strategy": "full",
    "epochs": 6,
    "lr": 3e-2,
}
JOB_TIMEOUT_MS = 240_000


def film(seed: int, *, pneumonia: bool) -> np.ndarray:
    return render_cxr(np.random.default_rng(seed), pneumonia=pneumonia, size=96)


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("films")
    u8 = np.rint(film(11, pneumonia=True) * 255).astype(np.uint8)
    Image.fromarray(u8, mode="L").save(d / "chest.png")
    (d / "chest.dcm").write_bytes(dicom_bytes(film(12, pneumonia=False), photometric="MONOCHROME1"))
    (d / "notes.txt").write_text("not an image")
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def trained(stack: Stack, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small model trained over the API (the clinician's and admin's journeys need one)."""
    upload = write_zip(tmp_path_factory.mktemp("api") / "cxr.zip", n_per_class=40, size=64, seed=5)
    with stack.client(keys["staff"]) as staff:
        with upload.open("rb") as fh:
            r = staff.post("/v1/datasets", files={"file": ("cxr.zip", fh, "application/zip")}, data={"name": "api"})
        dataset = wait_for(staff, f"/v1/datasets/{r.json()['id']}", {"ready", "failed"}, timeout=120)
        assert dataset["status"] == "ready", dataset
        r = staff.post("/v1/jobs", json={**FIT_SPEC, "dataset_id": dataset["id"], "model_name": MODEL})
        assert r.status_code == 202, r.text
        job = wait_for(staff, f"/v1/jobs/{r.json()['id']}", {"succeeded", "failed", "cancelled"}, timeout=300)
        assert job["status"] == "succeeded", job
        assert staff.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1}).status_code == 200
    return job


def no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


# --------------------------------------------------------------------------- sign-in and navigation


def test_sign_in_keeps_the_key_out_of_the_browser_and_signs_out(web: Web, stack: Stack) -> None:
    page = web.page(allow_console=("status of 401",))  # the check after signing out
    screenshot(page, "signin-desktop")
    page.get_by_label("API key").wait_for()
    assert page.evaluate("document.activeElement.name") == "key"  # keyboard only: the key field has the focus
    page.keyboard.type(stack.admin_key)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Sign out").wait_for()
    cookie = next(c for c in page.context.cookies() if c["name"] == "hilum_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    stored = page.evaluate("JSON.stringify([localStorage, sessionStorage]) + location.href + document.cookie")
    assert stack.admin_key not in stored and cookie["value"] not in stored
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to Hilum").wait_for()
    status = page.evaluate("fetch('/v1/models').then(r => r.status)")
    assert status == 401


def test_navigation_shows_only_what_the_role_may_do(web: Web, keys: dict[str, str]) -> None:
    expected = {
        "clinician": ["Ask about a film"],
        "staff": ["Ask about a film", "Datasets", "Train", "Jobs", "Models"],
        "admin": ["Ask about a film", "Datasets", "Train", "Jobs", "Models", "Keys", "Weights", "Audit log"],
    }
    for role, links in expected.items():
        page = web.page(keys[role])
        assert page.locator("#nav a").all_inner_texts() == links, role
    page.goto(page.url.split("#")[0] + "#/keys")
    page.get_by_role("heading", name="API keys").wait_for()
    clinician = web.page(keys["clinician"])
    clinician.goto(clinician.url.split("#")[0] + "#/keys")
    clinician.get_by_text("The 'clinician' role cannot open this page.").wait_for()


def test_an_expired_session_asks_to_sign_in_again(web: Web, stack: Stack, keys: dict[str, str]) -> None:
    page = web.page(keys["staff"], allow_console=("status of 401",))
    with session_scope(stack.database_url) as s:
        s.execute(update(WebSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    try:
        page.get_by_role("link", name="Jobs").click(timeout=10_000)
    except PlaywrightTimeoutError:
        pass  # a background refresh met the 401 first and signed out (the nav is gone): the same outcome
    page.get_by_text("Your session expired or was signed out").wait_for()
    page.get_by_label("API key").wait_for()


# --------------------------------------------------------------------------- clinician


def test_clinician_asks_about_a_png_and_a_dicom(web: Web, keys: dict[str, str], trained: dict, films: dict) -> None:
    page = web.page(keys["clinician"])
    page.get_by_role("heading", name="Ask about a film").wait_for()
    page.get_by_label("Model").select_option(MODEL)  # the shared test stack holds other tests' models too
    page.locator("input[name=films]").set_input_files([films["chest.png"], films["chest.dcm"]])
    cards = page.locator("section.result-card")
    for name in ("chest.png", "chest.dcm"):
        card = page.get_by_role("region", name=f"Result for {name}")
        card.locator("[data-testid=operating-point]").wait_for(timeout=60_000)
        label = card.locator(".label-big").inner_text()
        assert label in ("NORMAL", "PNEUMONIA", "Label withheld")
        op = card.locator("[data-testid=operating-point]").inner_text()
        assert "sensitivity" in op and "specificity" in op, op
        assert re.search(r"\d+\.\d%", card.locator("[data-testid=probability]").inner_text())
        assert card.get_by_text(f"{MODEL}, version 1").count() == 1
        base = card.get_by_role("img", name="The film as the model saw it (canonical grayscale)")
        overlay = card.locator("img.overlay")
        assert base.evaluate("i => i.complete && i.naturalWidth > 0")
        assert overlay.evaluate("i => i.complete && i.naturalWidth > 0")
        assert card.get_by_role("group", name="Heatmap legend").count() == 1
        opacity = card.get_by_label(re.compile("Heatmap opacity"))
        opacity.fill("30")
        assert overlay.evaluate("i => i.style.opacity") == "0.3"
    assert cards.count() == 2
    recent = page.get_by_role("heading", name="Your recent predictions").locator("xpath=..")
    recent.locator("tbody tr").nth(1).wait_for()
    screenshot(page, "ask-desktop")
    page.set_viewport_size(TABLET)
    assert no_horizontal_overflow(page)
    screenshot(page, "ask-tablet")


def test_a_refused_file_says_why(web: Web, keys: dict[str, str], trained: dict, films: dict) -> None:
    page = web.page(keys["clinician"], allow_console=("status of 422",))
    page.locator("input[name=films]").set_input_files(films["notes.txt"])
    alert = page.get_by_role("region", name="Result for notes.txt").get_by_role("alert")
    alert.wait_for()
    assert "This file was refused: not a PNG, JPEG or DICOM file" in alert.inner_text()


def test_the_default_version_is_one_fit_for_use(web: Web, stack: Stack, keys: dict[str, str], tmp_path: Path) -> None:
    """Without a production alias the default answer comes from the newest version fit for use, and says so."""
    from tests.service.test_warm_start import artifact_bytes, import_model

    with stack.client() as admin:
        for name, fits in (("web-fit-then-unfit", (True, False)), ("web-never-fit", (False,))):
            for i, fit in enumerate(fits):
                data = artifact_bytes(tmp_path / f"{name}-{i}.pt", fit_for_use=fit)
                r = import_model(admin, name, data)
                assert r.status_code == 201, r.text
    page = web.page(keys["clinician"])
    page.get_by_role("heading", name="Ask about a film").wait_for()
    model, version = page.get_by_label("Model"), page.get_by_label("Version")
    model.select_option("web-fit-then-unfit")
    assert version.locator("option").first.inner_text() == "default (version 1)"
    assert version.locator("option", has_text="version 2 (not fit for use)").count() == 1
    model.select_option("web-never-fit")
    assert version.locator("option").first.inner_text() == "default (no version is fit for use)"
    screenshot(page, "ask-no-fit-version-desktop")

    # Staff see the imported versions on the model page: their source instead of a training report.
    staff = web.page(keys["staff"])
    staff.goto(stack.base_url + "/#/models/web-fit-then-unfit")
    staff.get_by_text("imported:").first.wait_for()
    promote = staff.get_by_role("button", name="Promote version 2 to production")
    assert promote.is_disabled()  # version 2 is not fit for use
    assert staff.get_by_role("link", name="evaluation").count() == 0  # no job, no report to link
    screenshot(staff, "models-imported-desktop")
    staff.set_viewport_size(TABLET)
    assert no_horizontal_overflow(staff)
    screenshot(staff, "models-imported-tablet")


# --------------------------------------------------------------------------- staff


def test_staff_uploads_trains_evaluates_promotes_and_rolls_back(
    web: Web, keys: dict[str, str], tmp_path: Path, stack: Stack, trained: dict
) -> None:
    """Version 2 of the model the fixture trained (its version 1 is in production), all through the pages."""
    upload = write_zip(tmp_path / "ward.zip", n_per_class=40, size=64, seed=5)
    with zipfile.ZipFile(upload, "a") as zf:  # one damaged file: the report lists it with its reason
        zf.writestr("NORMAL/broken-film.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    page = web.page(keys["staff"])
    page.get_by_role("link", name="Datasets").click()
    page.get_by_label("Name").fill("ward-web")
    page.get_by_label("Zip file").set_input_files(upload)
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Follow it and read the report").click()
    assert page.get_by_label("Upload progress").count() == 0  # left the upload page
    page.get_by_role("heading", name="Classes").wait_for(timeout=120_000)
    assert "ready" in page.locator("main").inner_text()
    page.get_by_role("heading", name=re.compile(r"Rejected files \(1\)")).wait_for()
    # Names in reports are hashed (no PHI); the reason is the plain one.
    page.get_by_role("row", name=re.compile(r"PNG file is damaged")).wait_for()
    page.get_by_label("Search rejected files").fill("damaged")  # searches reasons too
    page.get_by_text("1 of 1 shown").wait_for()
    page.get_by_label("Search rejected files").fill("no-such-file")
    page.get_by_text("0 of 1 shown").wait_for()
    screenshot(page, "dataset-desktop")

    page.get_by_role("link", name="Train a model on this dataset").click()
    page.get_by_label("Backbone").select_option("test_resnet")
    page.get_by_label("Strategy").select_option(FIT_SPEC["strategy"])
    page.get_by_label("Epochs").fill(str(FIT_SPEC["epochs"]))
    page.get_by_label("Image size (px)").fill(str(FIT_SPEC["image_size"]))
    page.get_by_label("Batch size").fill(str(FIT_SPEC["batch_size"]))
    page.get_by_label("Learning rate (optional)").fill(str(FIT_SPEC["lr"]))
    page.get_by_label("Model name").fill(MODEL)
    page.get_by_label("Initial weights").select_option("none")
    assert page.get_by_text("Random weights.").is_visible()
    screenshot(page, "train-desktop")
    page.get_by_role("button", name="Start training").click()
    page.get_by_role("heading", name=re.compile(f"Job .*: {MODEL}")).wait_for()
    done = page.get_by_text("Open the evaluation")
    done.wait_for(timeout=JOB_TIMEOUT_MS)
    main = page.locator("main").inner_text()
    assert f"epoch {FIT_SPEC['epochs']} of {FIT_SPEC['epochs']}" in main and "Finished: succeeded" in main
    epochs = FIT_SPEC["epochs"]  # once done, every epoch is drawn (from the report's history)
    val_points = page.get_by_role("img", name="validation AUROC and loss").locator("circle")
    page.wait_for_function(f"document.querySelectorAll('svg[aria-label=\"training loss\"] circle').length == {epochs}")
    assert val_points.count() == 2 * epochs
    screenshot(page, "job-desktop")

    done.click()
    page.get_by_role("heading", name=f"Evaluation: {MODEL} version 2").wait_for()
    page.get_by_role("img", name="ROC curve").wait_for()
    slider = page.get_by_label("Threshold", exact=True)
    job_id = page.url.split("/jobs/")[1].split("/")[0]
    with stack.client(keys["staff"]) as staff:
        op = staff.get(f"/v1/jobs/{job_id}/report").json()["operating_point"]
    assert page.get_by_test_id("slider-threshold").inner_text() == f"{op['threshold']:.4f}"
    assert page.get_by_test_id("sens").inner_text() == f"{100 * op['sensitivity']:.1f}%"  # same figures as training
    slider.focus()
    page.keyboard.press("Home")
    assert page.get_by_test_id("slider-threshold").inner_text() == "0.0000"
    assert page.get_by_test_id("sens").inner_text() == "100.0%"
    page.keyboard.press("End")
    assert page.get_by_test_id("slider-threshold").inner_text() == "1.0000"
    assert page.get_by_test_id("spec").inner_text() == "100.0%"
    slider.fill("500")
    assert page.get_by_test_id("slider-threshold").inner_text() == "0.5000"
    screenshot(page, "evaluation-desktop")
    page.get_by_label("Reason").fill("ward 3 prefers fewer false alarms")
    page.get_by_role("button", name="Use this threshold for the version").click()
    page.get_by_text("Threshold set to 0.5000").wait_for()
    with stack.client(keys["staff"]) as staff:
        history = staff.get(f"/v1/models/{MODEL}/versions/2/threshold/history").json()
    assert [(h["new_threshold"], h["reason"]) for h in history] == [(0.5, "ward 3 prefers fewer false alarms")]
    page.get_by_role("button", name="Promote version 2 to production").click()
    page.get_by_text("Production is now version 2.").wait_for()
    page.get_by_role("link", name="versions and promotion").click()
    assert page.get_by_test_id("production").inner_text() == "version 2"
    assert page.get_by_role("columnheader").all_inner_texts()[:3] == ["Version", "v2", "v1"]  # side by side
    screenshot(page, "models-desktop")
    page.get_by_role("button", name="Roll back to version 1").click()
    page.get_by_text("Rolled back: production is now version 1.").wait_for()
    assert page.get_by_test_id("production").inner_text() == "version 1"
    history = page.get_by_role("heading", name="Alias history").locator("xpath=..").locator("tbody tr")
    assert history.count() == 3  # v1 (the fixture), v2, back to v1
    with stack.client(keys["staff"]) as staff:
        assert staff.get(f"/v1/models/{MODEL}").json()["aliases"] == {"production": 1}


def test_staff_follows_a_running_job_and_cancels_it(
    web: Web, stack: Stack, keys: dict[str, str], trained: dict
) -> None:
    spec = {**FIT_SPEC, "epochs": 200, "model_name": "cancelled", "dataset_id": trained["dataset_id"]}
    with stack.client(keys["staff"]) as staff:
        r = staff.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    page = web.page(keys["staff"])
    page.goto(f"{stack.base_url}/#/jobs/{job_id}")
    page.get_by_text(re.compile(r"step \d+ of \d+")).wait_for(timeout=60_000)  # live, from the event stream
    page.get_by_text(re.compile(r"Layer groups: \d+ of \d+ unfrozen")).wait_for()
    page.get_by_text(re.compile(r"ETA")).wait_for()
    page.get_by_role("img", name="training loss").locator("circle").first.wait_for()  # drawn as events arrive
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_text("Cancelled. The last epoch checkpoint is kept.").wait_for(timeout=60_000)
    with stack.client(keys["staff"]) as staff:
        assert staff.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


# --------------------------------------------------------------------------- admin


def test_admin_registers_weights_and_the_form_offers_them(
    web: Web, keys: dict[str, str], trained: dict, tmp_path: Path
) -> None:
    """`trained` leaves a ready dataset: without one the Train page has no form."""
    torch.manual_seed(0)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    path = tmp_path / "test_resnet_web_journey.safetensors"  # a name no other test registers on the shared stack
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    page = web.page(keys["admin"])
    page.get_by_role("link", name="Weights").click()
    page.get_by_label("Backbone").fill("test_resnet")
    page.get_by_label("Weights file").set_input_files(path)
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Registered.").wait_for()
    page.get_by_role("cell", name=path.name).wait_for()
    page.get_by_role("link", name="Train").click()
    page.get_by_role("heading", name="Train a model").wait_for()  # not the Weights page's Backbone field
    page.get_by_label("Backbone").select_option("test_resnet")
    assert page.get_by_label("Initial weights").input_value() != "none"  # the registered file by default
    assert page.get_by_text("Random weights.").count() == 0
    page.get_by_label("Initial weights").select_option("none")
    page.get_by_text("Random weights.").wait_for()


def test_admin_creates_and_revokes_a_key(web: Web, stack: Stack, keys: dict[str, str]) -> None:
    page = web.page(keys["admin"])
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name").fill("ward-3-pc")
    page.get_by_label("Role").select_option("clinician")
    page.get_by_role("button", name="Create key").click()
    new_key = page.get_by_test_id("new-key").input_value()
    assert new_key.startswith("hk_")
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == new_key
    with stack.client(new_key) as client:
        assert client.get("/v1/models").status_code == 200
    screenshot(page, "keys-desktop")
    page.get_by_role("button", name="Revoke ward-3-pc").click()
    page.get_by_role("button", name="Confirm revoking ward-3-pc").click()
    page.get_by_role("row", name=re.compile("ward-3-pc")).get_by_text("revoked").wait_for()
    with stack.client(new_key) as client:
        assert client.get("/v1/models").status_code == 401
    other = web.page(allow_console=("status of 401",))
    other.get_by_label("API key").fill(new_key)
    other.get_by_role("button", name="Sign in").click()
    other.get_by_text("That key is not valid").wait_for()


def test_admin_audit_log_filters_and_exports_csv(
    web: Web, stack: Stack, keys: dict[str, str], trained: dict, films: dict
) -> None:
    with stack.client(keys["clinician"]) as clin:
        r = clin.post(f"/v1/models/{MODEL}/predict", files={"file": ("a.png", films["chest.png"].read_bytes())})
        assert r.status_code == 200, r.text
    page = web.page(keys["admin"])
    page.get_by_role("link", name="Audit log").click()
    page.get_by_text(re.compile(r"\d+ of \d+ loaded predictions")).wait_for()
    page.get_by_label("Label").fill("no-such-label")
    page.get_by_text(re.compile(r"^0 of \d+ loaded predictions")).wait_for()
    page.get_by_label("Label").fill("")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows and {"id", "created_at", "key_id", "model_name", "label", "probabilities"} <= set(rows[0])
    assert any(row["model_name"] == MODEL for row in rows)
    screenshot(page, "audit-desktop")
    page.get_by_role("link", name="Weights").click()
    page.get_by_role("heading", name="Register a weights file").wait_for()


# --------------------------------------------------------------------------- the whole app, offline


def test_every_page_stays_on_its_origin(web: Web, stack: Stack, keys: dict[str, str], trained: dict) -> None:
    page = web.page(keys["admin"])
    base = stack.base_url + "/#"
    with stack.client() as admin:
        dataset_id = admin.get("/v1/datasets").json()[0]["id"]
    pages = {
        "/ask": "Ask about a film",
        "/datasets": "Datasets",
        f"/datasets/{dataset_id}": "Classes",
        "/train": "Train a model",
        "/jobs": "Training jobs",
        f"/jobs/{trained['id']}": "Progress",
        f"/jobs/{trained['id']}/report": "Metrics",
        "/models": "Models",
        f"/models/{MODEL}": "Versions side by side",
        "/keys": "API keys",
        "/weights": "Weights registry",
        "/audit": "Prediction audit log",
    }
    for path, heading in pages.items():
        page.goto(base + path)
        page.get_by_role("heading", name=heading, exact=True).first.wait_for()
        page.wait_for_load_state("networkidle")
    rec = page.recorder
    assert rec.off_origin() == []
    assert any("/web/static/js/app.js" in u for u in rec.requests)
    assert any(f"/v1/jobs/{trained['id']}/report" in u for u in rec.requests)
    page.set_viewport_size(TABLET)
    page.goto(base + f"/jobs/{trained['id']}/report")
    page.get_by_role("heading", name="Metrics").wait_for()
    assert no_horizontal_overflow(page)
    screenshot(page, "evaluation-tablet")
    assert httpx.get(stack.base_url + "/").status_code == 200
