"""A real browser for the console tests: Playwright driving the system Chromium (no browser download).

Without a `chromium` binary or the `playwright` package the tests skip and say why (a user's fresh
machine); with TASKYARD_TEST_REQUIRE_SERVICES=1 (CI, which installs chromium) they must run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import services_required

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_binary() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"TASKYARD_TEST_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium for one test."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (it is in the dev dependency group)")
    binary = chromium_binary()
    if binary is None:
        _unavailable("no chromium binary on PATH (Debian/Ubuntu: apt-get install chromium)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        instance = p.chromium.launch(executable_path=binary, args=["--no-sandbox"], headless=True)
        try:
            yield instance
        finally:
            instance.close()


def new_page(browser: Any, base_url: str) -> Any:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Script errors only: Chromium also logs every 4xx answer ("Failed to load resource"), which some
    # tests provoke on purpose and the page shows to the user.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.js_errors = errors
    return page


def log_in(page: Any, email: str, password: str) -> None:
    page.goto("/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.locator("#conn.conn-live").wait_for()


def screenshot(page: Any, name: str) -> None:
    """Take the page's screenshot: into docs/console-<name>.png with TASKYARD_UPDATE_SCREENSHOTS=1 (so a test
    run does not rewrite tracked files), else into a temporary folder (the rendering path still runs)."""
    folder = DOCS if os.environ.get("TASKYARD_UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir())
    target = folder / f"console-{name}.png"
    page.screenshot(path=str(target))
    assert target.stat().st_size > 0
