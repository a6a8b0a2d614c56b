"""/docs and /redoc load in a real headless browser without one request off the origin."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser import browser  # noqa: F401  (the shared session fixture)
from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def load(browser: Any, stack: Stack, path: str, ready_selector: str) -> list[str]:  # noqa: F811
    """Every URL the page requested while loading ``path`` and rendering ``ready_selector``."""
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(stack.base_url + path, wait_until="networkidle")
        page.wait_for_selector(ready_selector, timeout=30_000)
    finally:
        page.close()
    return requested


@pytest.mark.parametrize(
    ("path", "ready_selector", "asset"),
    [
        ("/docs", ".swagger-ui .opblock", "/static/docs/swagger-ui-bundle.js"),
        ("/redoc", "[data-section-id]", "/static/docs/redoc.standalone.js"),
    ],
)
def test_docs_render_with_no_request_off_the_origin(
    browser: Any,  # noqa: F811
    stack: Stack,
    path: str,
    ready_selector: str,
    asset: str,
) -> None:
    requested = load(browser, stack, path, ready_selector)
    origin = urlsplit(stack.base_url).netloc
    off_origin = [u for u in requested if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != origin]
    assert off_origin == [], off_origin
    assert any(u.endswith(asset) for u in requested), requested
    assert any(u.endswith("/openapi.json") for u in requested), requested


def test_docs_assets_are_served_from_the_package(stack: Stack) -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon-32x32.png"):
        r = httpx.get(f"{stack.base_url}/static/docs/{name}")
        assert r.status_code == 200 and len(r.content) > 100, name
    html = httpx.get(stack.base_url + "/docs").text
    assert "cdn.jsdelivr.net" not in html and "fonts.googleapis" not in html
