"""The desk in a real browser: sign in, each page's content, reprocess, a doublon decision,
exports, the CSRF refusal of a forged POST, a reader's limits, and HTML from the GAM never
run. The store: tests/desk/store.py; the daemon: tests/desk/serving.py."""

from __future__ import annotations

import re

import pytest

from tests.desk.serving import OPERATOR_TOKEN, READER_TOKEN, desk_daemon
from tests.desk.store import IMG_GIVEN, SCRIPT_NAME


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    with desk_daemon(tmp_path_factory.mktemp("desk-browser")) as running:
        yield running


def signed_in(browser, desk, token: str = OPERATOR_TOKEN):
    context = browser.new_context(base_url=desk.base, accept_downloads=True)
    page = context.new_page()
    page.goto("/desk/")
    assert page.url.endswith("/desk/signin")
    page.get_by_label("Jeton d'accès").fill(token)
    page.keyboard.press("Enter")  # the form is sent from the keyboard
    page.wait_for_url(re.compile(r".*/desk/$"))
    return page


def test_sign_in_and_the_overview(browser, desk):
    page = signed_in(browser, desk)
    assert page.locator("h1").inner_text() == "Vue d'ensemble"
    text = page.locator("main").inner_text()
    assert "refusé (AE)" in text and "GAM|CHU-X" in text
    assert re.search(r"\b1\s+paires de doublons potentiels", text)
    assert re.search(r"\b2\s+en collision d'INS", text)
    assert re.search(r"filedrop\s+en service\s+1 file\(s\) waiting", text)  # the held file
    nav = page.locator("nav a").all_inner_texts()
    assert nav[:3] == ["Vue d'ensemble", "Patients", "Messages"]
    assert "Doublons potentiels" in nav and "Collisions d'INS" in nav
    assert page.evaluate("typeof Chart") == "function"  # the vendored library, no CDN
    assert page.evaluate("Chart.getChart('hourly').data.datasets.length") == 4
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Aller au contenu"


def test_html_from_the_gam_is_shown_as_text_never_run(browser, desk):
    page = signed_in(browser, desk)
    page.goto("/desk/patients?nom=script")
    page.get_by_role("link", name=re.compile("^[0-9]+$")).first.click()
    heading = page.locator("h1").inner_text()
    assert SCRIPT_NAME in heading
    assert IMG_GIVEN in page.locator("main").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0


def test_a_patient_card_shows_badges_links_merges_and_the_timeline(browser, desk):
    page = signed_in(browser, desk)
    page.goto("/desk/patients?ipp=MRG2")
    page.get_by_role("link", name=re.compile("^[0-9]+$")).first.click()
    main = page.locator("main").inner_text()
    assert "validée" in main and "A absorbé" in main
    timeline = page.locator(".timeline").inner_text()
    assert "A28" in timeline and "A40" in timeline
    page.get_by_role("link", name=re.compile("^patient [0-9]+$")).first.click()
    assert "fusionné dans" in page.locator(".badges").inner_text()
    page.goto("/desk/patients?ipp=COL1")
    page.get_by_role("link", name=re.compile("^[0-9]+$")).first.click()
    assert "INS en collision" in page.locator(".badges").inner_text()
    assert "INS non utilisable" in page.locator(".badges").inner_text()


def test_an_operator_reprocesses_an_ae_message(browser, desk):
    page = signed_in(browser, desk)
    page.goto("/desk/messages?issue=AE")
    page.locator("tbody a").first.click()
    assert "205" in page.locator("main table").first.inner_text()
    page.get_by_role("link", name="Retraiter ce message…").click()
    page.get_by_role("button", name="Confirmer le retraitement").click()
    assert re.search(r"Message \d+ : ADT A31, AA", page.locator("h1").inner_text())
    assert "Retraitement de" in page.locator("main").inner_text()


def test_a_doublon_decision_and_the_csv_export(browser, desk):
    page = signed_in(browser, desk)
    page.goto("/desk/listes/doublons")
    with page.expect_download() as download:
        page.get_by_role("link", name="Exporter en CSV").click()
    exported = download.value.path().read_text(encoding="utf-8-sig").splitlines()
    assert exported[0] == "patient_a,patient_b" and len(exported) == 2
    page.get_by_label("Raison").fill("deux sœurs, vu les pièces d'identité")
    page.get_by_role("button", name="Pas un doublon").click()
    page.wait_for_url(re.compile(r".*/desk/listes/doublons$"))
    decisions = page.locator("table").nth(1).inner_text()
    assert "deux sœurs, vu les pièces d'identité" in decisions and "alice" in decisions
    assert "0 ligne(s)" in page.locator("table").first.inner_text()


def test_a_forged_post_is_refused(browser, desk):
    page = signed_in(browser, desk)
    status = page.evaluate(
        """async () => {
            const body = new URLSearchParams({a: "1", b: "2", raison: "forged"});
            const answer = await fetch("/desk/doublons/decision", {method: "POST", body});
            return answer.status;
        }"""
    )
    assert status == 403


def test_a_reader_cannot_reprocess(browser, desk):
    page = signed_in(browser, desk, READER_TOKEN)
    assert "bob (lecture)" in page.locator("header").inner_text()
    page.goto("/desk/messages?issue=AR")
    page.locator("tbody a").first.click()
    page.get_by_role("link", name="Retraiter ce message…").click()
    assert "réservé aux opérateurs" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="Confirmer le retraitement").count() == 0
    csrf = page.locator("form.signout input[name=csrf]").get_attribute("value")
    status = page.evaluate(
        """async (csrf) => {
            const answer = await fetch(location.pathname, {
                method: "POST", body: new URLSearchParams({csrf})});
            return answer.status;
        }""",
        csrf,
    )
    assert status == 403


@pytest.mark.parametrize(
    "path",
    [
        "/desk/",
        "/desk/patients?nom=lef",
        "/desk/messages",
        "/desk/listes/doublons",
        "/desk/listes/collisions",
    ],
)
def test_pages_read_at_200_percent_zoom_without_sideways_scrolling(browser, desk, path):
    context = browser.new_context(base_url=desk.base, viewport={"width": 640, "height": 480})
    page = context.new_page()
    page.goto("/desk/signin")
    page.get_by_label("Jeton d'accès").fill(READER_TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/desk/$"))
    page.goto(path)
    # a 1280-pixel screen at 200 %: the page is laid out in 640 CSS pixels
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{path} is {overflow} px wider than the window"
    context.close()


def test_a_range_trace_export_from_the_patients_page(browser, desk):
    page = signed_in(browser, desk, READER_TOKEN)
    page.goto("/desk/patients")
    page.get_by_label("Depuis").fill("2000-01-01")
    with page.expect_download() as download:
        page.get_by_role("button", name="Exporter").click()
    rows = download.value.path().read_text(encoding="utf-8-sig").splitlines()
    assert rows[0].startswith("patient_id,at,ins,oid,status,identity_mode")
    assert any(",DESK-12,A31," in row and "ins-removed" in row for row in rows)
