"""Debian's Chromium driven by Playwright for the dashboard tests: the browser, the
artifacts folder for screenshots, and a watch on a page's console errors and failed
requests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_path() -> str:
    """Debian's Chromium, or a skip/fail that says how to install it."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("TACHIMETER_NO_SYSTEM_DEPS") == "1":
        pytest.skip("chromium (Debian package chromium) absent and TACHIMETER_NO_SYSTEM_DEPS=1")
    pytest.fail(
        "chromium not found: the dashboard tests drive Debian's Chromium at /usr/bin/chromium. "
        "Run `make test` (which installs it) or `apt-get install -y chromium`; set "
        "TACHIMETER_NO_SYSTEM_DEPS=1 to skip such tests instead.",
        pytrace=False,
    )


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright), closed on exit."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


class PageWatch:
    """Console errors, page errors, failed requests and HTTP errors of one page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r: (
                self.problems.append(f"failed {r.url}: {r.failure}")
                if "/v1/stream" not in r.url  # streams are aborted on navigation, by design
                else None
            ),
        )
        page.on(
            "response",
            lambda r: self.problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )
