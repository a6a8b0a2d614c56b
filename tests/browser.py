"""A shared headless browser for tests (Playwright driving Debian's chromium, never a downloaded build).

Use it with ``from tests.browser import browser  # noqa: F401`` in a test module. Outside CI the tests that
need it skip with the reason when /usr/bin/chromium is absent (``apt-get install -y chromium``); under
``CI=true`` they fail instead, so CI never passes without running them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium for one test module.

    Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main thread while it
    is open, and every later ``asyncio.run`` in the same thread (the batcher and guard tests) would fail.
    """
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "the playwright package is not installed (pip install playwright)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()
