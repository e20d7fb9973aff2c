"""The desk over real HTTP (`pamfr serve` with [desk] enabled, httpx): who gets in, what a
POST needs, what bad input gets, reprocessing, decisions, exports and the access log."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select

from pamfr.store.db import make_engine
from pamfr.store.schema import desk_access, doublon_decision, message
from tests.desk.serving import OPERATOR_TOKEN, READER_TOKEN, SECRET, csrf_of, desk_daemon
from tests.desk.store import IMG_GIVEN, SCRIPT_NAME
from tests.helpers import log_rows, pamfr_api


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    with desk_daemon(tmp_path_factory.mktemp("desk")) as running:
        yield running


def rows(db_url: str, query) -> list:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()


def message_id(desk, control_id: str, outcome: str) -> int:
    found = rows(
        desk.db_url,
        select(message.c.id).where(
            message.c.control_id == control_id, message.c.outcome == outcome
        ),
    )
    return found[0][0]


def patient_id(desk, ipp: str) -> int:
    client = desk.signed_in()
    page = client.get("/desk/patients", params={"ipp": ipp})
    return int(re.search(r'href="/desk/patients/(\d+)"', page.text).group(1))


def test_pages_need_a_session_but_sign_in_and_static_files_do_not(desk):
    client = desk.client()
    for path in ("/desk/", "/desk/patients/1", "/desk/messages", "/desk/listes/doublons"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/desk/signin")
    assert client.get("/desk").headers["location"] == "/desk/"
    assert "Jeton d'accès" in client.get("/desk/signin").text
    assert client.get("/desk/static/desk.css").status_code == 200
    assert client.get("/desk/static/chart.umd.min.js").text.startswith("/*!")
    # the guard lets only the desk's own mount through without a bearer token
    assert client.get("/deskx").status_code == 401
    assert client.get("/fhir/Patient").status_code == 401


def test_sign_in_gives_a_strict_http_only_cookie_and_a_bad_token_is_refused(desk):
    client = desk.client()
    form = client.get("/desk/signin")
    wrong = client.post("/desk/signin", data={"csrf": csrf_of(form.text), "token": "x" * 20})
    assert wrong.status_code == 401
    assert "Jeton inconnu" in wrong.text
    assert "pamfr_desk=" not in wrong.headers.get("set-cookie", "")
    form = client.get("/desk/signin")
    answer = client.post("/desk/signin", data={"csrf": csrf_of(form.text), "token": READER_TOKEN})
    assert answer.status_code == 303
    cookie = [c for c in answer.headers.get_list("set-cookie") if c.startswith("pamfr_desk=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/desk" in cookie
    assert "Secure" not in cookie  # plain HTTP here: the TLS test is the browser's
    assert READER_TOKEN not in cookie
    overview = client.get("/desk/")
    assert overview.status_code == 200
    assert "bob (lecture)" in overview.text


def test_the_overview_shows_the_doors_and_the_figures(desk):
    page = desk.signed_in(READER_TOKEN).get("/desk/").text
    assert re.search(r"<td>mllp</td><td class=\"ok\">en service</td>", page)
    assert "<td>filedrop</td>" in page and "1 file(s) waiting" in page
    assert re.search(r"<strong>1</strong> refusé \(AE\)", page)
    assert re.search(r"<strong>2</strong> en collision d'INS", page)
    charts = json.loads(re.search(r'id="chart-data">(.*?)</script>', page).group(1))
    assert sum(charts["hourly"]["AE"]) == 1 and sum(charts["hourly"]["AR"]) == 1


def test_a_sign_in_without_its_csrf_token_is_refused(desk):
    client = desk.client()
    client.get("/desk/signin")
    answer = client.post("/desk/signin", data={"csrf": "forged", "token": OPERATOR_TOKEN})
    assert answer.status_code == 403
    assert "pamfr_desk=" not in answer.headers.get("set-cookie", "")


def _cookie(name: str, token: str, age: float = 0) -> str:
    """A session cookie for `name` and `token`, signed with the desk's secret `age` seconds
    ago (the shape pamfr/desk/session.py writes)."""

    class Then(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    fingerprint = hmac.new(SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]
    signer = URLSafeTimedSerializer(SECRET.encode(), salt="pamfr-desk-session", signer=Then)
    return signer.dumps({"n": name, "f": fingerprint, "c": "x"})


@pytest.mark.parametrize(
    "cookie",
    [
        "forged-value",
        _cookie("alice", OPERATOR_TOKEN, age=31 * 60),  # idle longer than idle_minutes (30)
        _cookie("carol", "carol-0123456789abcdef0123"),  # a token not (or no longer) configured
        _cookie("alice", "alice-former-token-0123456789"),  # alice's token was changed
    ],
    ids=["forged", "expired", "removed-token", "changed-token"],
)
def test_a_forged_expired_or_orphan_session_goes_back_to_sign_in(desk, cookie):
    client = desk.client()
    client.cookies.set("pamfr_desk", cookie, path="/desk")
    answer = client.get("/desk/")
    assert (answer.status_code, answer.headers["location"]) == (303, "/desk/signin")


def test_the_same_cookie_signed_now_gets_in(desk):
    client = desk.client()
    client.cookies.set("pamfr_desk", _cookie("alice", OPERATOR_TOKEN, age=60), path="/desk")
    assert client.get("/desk/").status_code == 200


def test_a_post_without_csrf_or_from_a_reader_is_403_changes_nothing_and_is_logged(desk):
    ae = message_id(desk, "DESK-AR", "AR")
    before = log_rows(desk.db_url, "id")
    operator = desk.signed_in(OPERATOR_TOKEN)
    forged = operator.post(f"/desk/messages/{ae}/retraiter", data={"csrf": "forged"})
    assert forged.status_code == 403
    assert "rien n&#39;a été fait" in forged.text
    reader = desk.signed_in(READER_TOKEN)
    confirm = reader.get(f"/desk/messages/{ae}/retraiter")
    assert "réservé aux opérateurs" in confirm.text
    refused = reader.post(
        f"/desk/messages/{ae}/retraiter", data={"csrf": csrf_of(reader.get("/desk/").text)}
    )
    assert refused.status_code == 403
    a, b = patient_id(desk, "DBL1"), patient_id(desk, "DBL2")
    decision = reader.post(
        "/desk/doublons/decision",
        data={"csrf": csrf_of(reader.get("/desk/").text), "a": a, "b": b, "raison": "x"},
    )
    assert decision.status_code == 403
    assert log_rows(desk.db_url, "id") == before
    assert rows(desk.db_url, select(func.count()).select_from(doublon_decision))[0][0] == 0
    log = desk.daemon.log()
    assert "desk POST /desk/messages -> 403 (alice): no valid CSRF token" in log
    assert "desk POST /desk/messages -> 403 (bob): not an operator" in log
    refusals = rows(
        desk.db_url,
        select(desk_access.c.token_name, desk_access.c.detail).where(
            desk_access.c.action == "refused"
        ),
    )
    assert ("alice", "/desk/messages: no valid CSRF token") in refusals
    assert ("bob", "/desk/doublons: not an operator") in refusals


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/desk/patients/999999", 404),
        ("/desk/messages/999999", 404),
        ("/desk/listes/inconnue", 404),
        ("/desk/nulle-part", 404),
        ("/desk/messages?issue=XX", 400),
        ("/desk/messages?depuis=hier", 400),
        ("/desk/messages?page=0", 400),
        ("/desk/messages?evenement=%3Cb%3E", 400),
        ("/desk/patients?naissance=28/03/1979", 400),
        ("/desk/listes/provisoires?jours=-1", 400),
        ("/desk/trace?depuis=2026-13-01", 400),
    ],
)
def test_unknown_ids_and_malformed_filters_get_a_page_not_a_traceback(desk, path, status):
    answer = desk.signed_in(READER_TOKEN).get(path)
    assert answer.status_code == status
    assert "<h1>" in answer.text and "Traceback" not in answer.text


def test_html_from_the_gam_is_escaped(desk):
    client = desk.signed_in(READER_TOKEN)
    pid = patient_id(desk, "XSS1")
    card = client.get(f"/desk/patients/{pid}").text
    assert SCRIPT_NAME not in card and IMG_GIVEN not in card
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in card
    listed = client.get("/desk/patients", params={"nom": "script"}).text
    assert "&lt;script&gt;" in listed and SCRIPT_NAME not in listed


def test_the_message_page_lays_out_segments_and_explains_the_ack(desk):
    client = desk.signed_in(READER_TOKEN)
    ae = message_id(desk, "DESK-AE", "AE")
    page = client.get(f"/desk/messages/{ae}").text
    assert "<caption>PID</caption>" in page
    assert "Patient name" in page and "Message control id" in page
    assert "205" in page and "numéro de message (MSH-10) réutilisé" in page
    listed = client.get("/desk/messages", params={"issue": "AE"}).text
    assert f'href="/desk/messages/{ae}"' in listed and "DESK-AE" in listed
    assert "DESK-1<" not in listed
    by_event = client.get("/desk/messages", params={"evenement": "A40"}).text
    assert "DESK-7" in by_event and "DESK-6" not in by_event
    # the paging links carry the filters encoded: a control id holding & or + stays whole
    second = client.get("/desk/messages", params={"msh10": "A&B+C", "page": "2"}).text
    assert 'href="/desk/messages?msh10=A%26B%2BC&page=1"' in second


def test_an_operator_reprocesses_an_ae_and_it_becomes_aa_the_original_kept(desk):
    client = desk.signed_in(OPERATOR_TOKEN)
    ae = message_id(desk, "DESK-AE", "AE")
    confirm = client.get(f"/desk/messages/{ae}/retraiter")
    answer = client.post(f"/desk/messages/{ae}/retraiter", data={"csrf": csrf_of(confirm.text)})
    assert answer.status_code == 303
    new = int(answer.headers["location"].rsplit("/", 1)[1])
    page = client.get(f"/desk/messages/{new}").text
    assert re.search(r'class="outcome-AA">AA<', page)
    assert f'href="/desk/messages/{ae}">message {ae}</a>' in page  # reprocess of
    original = rows(
        desk.db_url, select(message.c.outcome, message.c.door).where(message.c.id == ae)
    )
    added = rows(
        desk.db_url,
        select(message.c.outcome, message.c.door, message.c.reprocess_of).where(
            message.c.id == new
        ),
    )
    assert original == [("AE", "mllp")]
    assert added == [("AA", "reprocess", ae)]
    again = client.post(f"/desk/messages/{ae}/retraiter", data={"csrf": csrf_of(confirm.text)})
    assert again.status_code == 409  # already reprocessed: never applied twice


def test_a_reprocess_that_still_fails_shows_its_new_outcome(desk):
    client = desk.signed_in(OPERATOR_TOKEN)
    ar = message_id(desk, "DESK-AR", "AR")
    confirm = client.get(f"/desk/messages/{ar}/retraiter")
    answer = client.post(f"/desk/messages/{ar}/retraiter", data={"csrf": csrf_of(confirm.text)})
    new = int(answer.headers["location"].rsplit("/", 1)[1])
    page = client.get(f"/desk/messages/{new}").text
    assert re.search(r'class="outcome-AR">AR<', page)
    assert "Cet événement n&#39;est pas pris en charge." in page
    assert rows(desk.db_url, select(message.c.outcome).where(message.c.id == ar)) == [("AR",)]


def test_a_doublon_decision_is_stored_shown_and_matches_the_cli(desk):
    from tests.helpers import run_cli

    client = desk.signed_in(OPERATOR_TOKEN)
    a, b = sorted((patient_id(desk, "DBL1"), patient_id(desk, "DBL2")))
    page = client.get("/desk/listes/doublons").text
    exported = client.get("/desk/listes/doublons.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    listed = list(csv.reader(io.StringIO(exported.text.lstrip("\ufeff"))))
    cli = run_cli("patient", "doublons", "--json", "--db", desk.db_url)
    assert listed[1:] == [[str(p) for p in d["patients"]] for d in json.loads(cli.stdout)]
    assert listed[1:] == [[str(a), str(b)]]
    answer = client.post(
        "/desk/doublons/decision",
        data={"csrf": csrf_of(page), "a": b, "b": a, "raison": "jumelles, vu les pièces"},
    )
    assert answer.status_code == 303
    after = client.get("/desk/listes/doublons").text
    assert "jumelles, vu les pièces" in after and ">alice<" in after
    assert "0 ligne(s)" in after
    assert run_cli("patient", "doublons", "--db", desk.db_url).returncode == 0
    again = client.post(
        "/desk/doublons/decision",
        data={"csrf": csrf_of(page), "a": a, "b": b, "raison": "encore"},
    )
    assert again.status_code == 409


def test_exports_match_the_cli_and_every_access_is_logged_without_patient_data(desk):
    from tests.helpers import run_cli

    client = desk.signed_in(READER_TOKEN)
    pid = patient_id(desk, "QUA1")
    client.get(f"/desk/patients/{pid}")
    exported = client.get(f"/desk/patients/{pid}/trace.json").json()
    cli = run_cli("patient", "trace", "--id", str(pid), "--format", "json", "--db", desk.db_url)
    assert exported == json.loads(cli.stdout)
    assert [r["control_id"] for r in exported] == ["DESK-11", "DESK-12"]
    table = client.get(f"/desk/patients/{pid}/trace.csv").text.lstrip("\ufeff")
    assert list(csv.DictReader(io.StringIO(table)))[1]["removed_why"].startswith("ins-removed")
    collisions = client.get("/desk/listes/collisions.csv").text
    assert collisions.splitlines()[0].lstrip("\ufeff") == "ins,patients"
    logged = rows(
        desk.db_url,
        select(desk_access.c.token_name, desk_access.c.action, desk_access.c.patient_id).where(
            desk_access.c.token_name == "bob"
        ),
    )
    assert ("bob", "view-patient", pid) in logged
    assert ("bob", "export-trace", pid) in logged
    assert ("bob", "export-worklist", None) in logged
    log = desk.daemon.log()
    for secret in ("QUALIF", "LEFEVRE", "Lefèvre", "COLLIN", "DBL1", "QUA1", "1980", "2800175"):
        assert secret not in log
    assert READER_TOKEN not in log and OPERATOR_TOKEN not in log


def test_pamfr_api_serves_the_desk_over_tls_with_a_secure_cookie(tmp_path):
    import ssl

    import httpx

    from pamfr.store.db import upgrade
    from tests.reliability.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    db_url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(db_url)
    settings = {
        "PAMFR_HTTP_TLS_CERT": str(pki.server.cert),
        "PAMFR_HTTP_TLS_KEY": str(pki.server.key),
        "PAMFR_HTTP_TOKENS": json.dumps({"alice": OPERATOR_TOKEN}),
        "PAMFR_DESK_ENABLED": "true",
        "PAMFR_DESK_OPERATORS": '["alice"]',
    }
    log_path = tmp_path / "api.log"
    with pamfr_api(db_url, log_path, settings) as port:
        assert "(/fhir, /events, /healthz, /desk)" in log_path.read_text()
        context = ssl.create_default_context(cafile=str(pki.ca))
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}", verify=context, follow_redirects=False
        ) as client:
            form = client.get("/desk/signin")
            answer = client.post(
                "/desk/signin", data={"csrf": csrf_of(form.text), "token": OPERATOR_TOKEN}
            )
            cookie = [c for c in answer.headers.get_list("set-cookie") if "pamfr_desk=" in c]
            assert answer.status_code == 303 and "Secure" in cookie[0]
            assert "alice (opérateur)" in client.get("/desk/").text
    rows_seen = rows(db_url, select(desk_access.c.token_name, desk_access.c.action))
    assert rows_seen == [("alice", "sign-in")]


def test_a_merge_takes_a_kept_doublon_pair_off_the_list_at_once(tmp_path):
    from pamfr.hl7.samples import message as hl7_message
    from tests.desk.store import DOUBLON_1
    from tests.helpers import send

    with desk_daemon(tmp_path) as running:
        client = running.signed_in(READER_TOKEN)
        assert "1 ligne(s)" in client.get("/desk/listes/doublons").text  # the pairs kept
        ack = send(
            running.daemon.port, [hl7_message("A40", DOUBLON_1, "MERGE-1", prior_ipp="DBL2")]
        )
        assert ack[0].code == "AA"
        after = client.get("/desk/listes/doublons")
        assert "0 ligne(s)" in after.text
        assert client.get("/desk/listes/doublons.csv").text.strip() == "\ufeffpatient_a,patient_b"
