"""A real browser for the desk's tests: Debian's chromium driven by Playwright (never a
browser Playwright downloads). Without /usr/bin/chromium the tests are skipped, saying so."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope: Playwright's sync API holds an event loop in this thread while it runs, and
# the tests after these ones call asyncio.run.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not shutil.which("chromium"):
        pytest.skip(
            "browser tests not run: no chromium on PATH "
            "(apt-get install chromium; .ci/run installs it)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()
