"""The desk's screenshots in docs/images/, taken with Debian's chromium on the browser tests'
store (tests/desk/store.py). Run: .venv/bin/python scripts/desk_screenshots.py"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM, FLAGS  # noqa: E402
from tests.desk.serving import OPERATOR_TOKEN, desk_daemon  # noqa: E402

IMAGES = REPO / "docs" / "images"


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        desk_daemon(Path(tmp)) as desk,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(base_url=desk.base, viewport={"width": 1280, "height": 900})
        page.goto("/desk/signin")
        page.get_by_label("Jeton d'accès").fill(OPERATOR_TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/desk/$"))
        page.screenshot(path=IMAGES / "desk-overview.png", full_page=True)
        page.goto("/desk/patients?ipp=QUA1")
        page.get_by_role("link", name=re.compile("^[0-9]+$")).first.click()
        page.screenshot(path=IMAGES / "desk-patient.png", full_page=True)
        page.goto("/desk/listes/doublons")
        page.screenshot(path=IMAGES / "desk-worklist.png", full_page=True)
        browser.close()
    print(f"screenshots in {IMAGES.relative_to(REPO)}")


if __name__ == "__main__":
    main()
