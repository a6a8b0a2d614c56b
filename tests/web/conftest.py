"""Fixtures for the web app's browser tests: signed-in pages that record every request and console error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import browser  # noqa: F401  (the shared session-scoped chromium)
from tests.conftest import Stack

DESKTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}
# Where screenshots go when asked (HILUM_SCREENSHOTS=/some/dir); none are written otherwise.
SCREENS = os.environ.get("HILUM_SCREENSHOTS")


@dataclass
class Recorder:
    """Everything one browser context asked for, and every console error it logged."""

    origin: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    allowed_console: tuple[str, ...] = ()

    def off_origin(self) -> list[str]:
        out = []
        for url in self.requests:
            if url.startswith("data:"):
                continue
            if url.startswith("blob:"):
                url = url[len("blob:") :]
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                out.append(url)
        return out

    def unexpected_console(self) -> list[str]:
        return [m for m in self.console_errors if not any(a in m for a in self.allowed_console)] + self.page_errors


@dataclass
class Web:
    stack: Stack
    browser: Any
    recorders: list[Recorder] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)

    def page(self, key: str | None = None, *, viewport: dict | None = None, allow_console: tuple[str, ...] = ()) -> Any:
        """A new browser context and page; signed in through the sign-in form when ``key`` is given."""
        context = self.browser.new_context(viewport=viewport or DESKTOP, accept_downloads=True)
        self.contexts.append(context)
        rec = Recorder(origin=self.stack.base_url, allowed_console=allow_console)
        self.recorders.append(rec)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("request", lambda r: rec.requests.append(r.url))
        page.on("console", lambda m: rec.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: rec.page_errors.append(str(e)))
        page.recorder = rec  # type: ignore[attr-defined]
        page.goto(self.stack.base_url + "/")
        if key is not None:
            sign_in(page, key)
        return page

    def close(self) -> None:
        for c in self.contexts:
            c.close()


def sign_in(page: Any, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def screenshot(page: Any, name: str) -> Path | None:
    if not SCREENS:
        return None
    path = Path(SCREENS) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def web(stack: Stack, browser: Any) -> Iterator[Web]:  # noqa: F811
    """Pages for one test; at teardown no page may have left the origin or logged a console error."""
    w = Web(stack=stack, browser=browser)
    try:
        yield w
    finally:
        w.close()
    for rec in w.recorders:
        assert rec.off_origin() == [], f"requests left the origin: {rec.off_origin()}"
        assert rec.unexpected_console() == [], f"console errors: {rec.unexpected_console()}"


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    """One key per role (the admin's is the stack's bootstrap key)."""
    out = {"admin": stack.admin_key}
    with stack.client() as admin:
        for role in ("staff", "clinician"):
            r = admin.post("/v1/keys", json={"name": f"web-{role}", "role": role})
            assert r.status_code == 201, r.text
            out[role] = r.json()["key"]
    return out
