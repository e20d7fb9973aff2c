"""FHIR search as FHIR R4 defines it, against `pamfr api` over a real socket, on SQLite and
PostgreSQL: token search (system|value, |value, system|, value, comma-OR), string search
case- and accent-insensitive with prefix matching, every identifier served found by its own
system|value, and a malformed parameter a 400 OperationOutcome naming it. Every Patient
served is checked against the published FR Core package (tests/frcore.py)."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import quote

import pytest
from sqlalchemy import event

from pamfr.fhir.patient import NAMESPACE_SYSTEM, patient_resource
from pamfr.hl7.samples import Person, message, nir_with_key
from pamfr.identity.stored import StoredIdentity
from pamfr.store.fhirquery import (
    PatientCriteria,
    find_version,
    patient_versions,
    reading,
    search_page,
)
from tests.frcore import check_bundle, check_outcome, check_patient
from tests.helpers import pamfr_api, run_cli
from tests.integration.test_fhir_api import get

TOKEN = "search-0123456789abcdef0123"
NIR = nir_with_key("2790363220789")
BILLING_NIR = nir_with_key("1560599123456")
NON_ISO = "CHU-X&000897406&N"  # HD-3 not ISO, as in the ANS examples
NH = f"{BILLING_NIR}^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH"

ACCENTED = Person(
    ipp="S01",
    birth_name="LÉVÊQUE",
    given_names=("HÉLÈNE",),
    authority=NON_ISO,
    pid32=("PROV",),
    extra_ids=(NH,),
)
QUALIFIED = Person(ipp="S02", birth_name="MARTIN", given_names=("ÉLODIE", "ANNE"), ins=NIR)
NO_GIVEN = Person(ipp="S03", birth_name="HÉLÈNE", given_names=(), pid32=("PROV",))
ABROAD = Person(ipp="S04", birth_name="OKONKWO", insee="99134", ins=nir_with_key("1790399134001"))


@contextmanager
def fhir_api(db_url: str, log_path, **settings: str) -> Iterator[str]:
    """`pamfr api` on the store, on a free loopback port: its base URL. `settings` are
    environment variables of the configuration."""
    with pamfr_api(
        db_url, log_path, {"PAMFR_HTTP_TOKENS": json.dumps({"t": TOKEN}), **settings}
    ) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def served(db_url, tmp_path, feed):
    feed.ok(*(message("A28", p, f"S-{p.ipp}") for p in (ACCENTED, QUALIFIED, NO_GIVEN, ABROAD)))
    ids = {p.ipp: feed.show("--ipp", p.ipp)["id"] for p in (ACCENTED, QUALIFIED, NO_GIVEN, ABROAD)}
    with fhir_api(db_url, tmp_path / "api.log") as base:
        yield base, ids, feed


def search(base: str, query: str) -> dict:
    status, _, body = get(f"{base}/fhir/Patient?{query}", token=TOKEN)
    assert status == 200, body
    check_bundle(body, "searchset")
    return body


def found(base: str, query: str) -> set[int]:
    return {int(e["resource"]["id"]) for e in search(base, query).get("entry", [])}


def test_every_identifier_served_is_found_by_its_own_system_and_value(served):
    base, ids, feed = served
    seen_systems = set()
    for ipp, pid in ids.items():
        status, _, resource = get(f"{base}/fhir/Patient/{pid}", token=TOKEN)
        assert status == 200
        check_patient(resource, feed.show("--ipp", ipp))
        for ident in resource["identifier"]:
            seen_systems.add(ident["system"])
            token = quote(f"{ident['system']}|{ident['value']}", safe="")
            assert pid in found(base, f"identifier={token}"), ident
    # the non-ISO authority, the billing NIR's FR Core system, an INS and an ISO authority
    assert {
        NAMESPACE_SYSTEM + "000897406",
        "urn:oid:1.2.250.1.213.1.4.13",
        "urn:oid:1.2.250.1.213.1.4.10",
        "urn:oid:1.2.250.1.999.1.1",
    } <= seen_systems


def test_token_search_forms(served):
    base, ids, _ = served
    non_iso = quote(NAMESPACE_SYSTEM + "000897406", safe="")
    assert found(base, f"identifier={non_iso}%7CS01") == {ids["S01"]}
    assert found(base, f"identifier={non_iso}%7C") == {ids["S01"]}  # system|: any value
    assert found(base, "identifier=%7CS01") == set()  # |value: no system, pamfr serves none
    assert found(base, "identifier=S01") == {ids["S01"]}  # value: any system
    assert found(base, "identifier=S01,S02") == {ids["S01"], ids["S02"]}  # comma: OR
    assert found(base, f"identifier={BILLING_NIR}") == {ids["S01"]}
    assert found(base, f"identifier=urn:oid:1.2.250.1.213.1.4.10%7C{NIR}") == {ids["S02"]}
    assert found(base, "identifier=urn:oid:1.2.250.1.213.1.4.10%7C") == {ids["S02"], ids["S04"]}
    # a system pamfr does not know: an empty searchset, not an error
    empty = search(base, "identifier=http://example.org/unknown%7C")
    assert empty["total"] == 0 and "entry" not in empty


def test_string_search_ignores_case_and_accents_and_matches_a_prefix(served):
    base, ids, feed = served
    assert found(base, "family=leveque") == {ids["S01"]}
    assert found(base, "family=L%C3%A9v") == {ids["S01"]}  # Lév
    assert found(base, "given=helene") == {ids["S01"]}
    assert found(base, "given=elo") == {ids["S02"]}
    assert found(base, "family=helene") == {ids["S03"]}  # a birth name without given name
    assert found(base, "name=hel") == {ids["S01"], ids["S03"]}
    assert found(base, "family=levequex") == set()
    assert found(base, "family=eveque") == set()  # a prefix, not a substring
    # the operator's search folds the same way
    for name in ("HÉLÈNE", "helene", "Hélène"):
        result = feed.cli("patient", "find", "--name", name, "--json")
        assert result.exit_code == 0, result.output
        assert {p["id"] for p in json.loads(result.stdout)} == {ids["S03"]}, name


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("_count=%C2%B2", "_count"),  # a superscript two: a digit to isdigit(), not to int()
        ("_count=101", "_count"),
        ("_cursor=abc", "_cursor"),
        ("birthdate=1979-13-01", "birthdate"),
        ("birthdate=gt1979", "birthdate"),
        ("given=", "given"),
        ("identifier=%7C", "identifier"),
        ("address=PARIS", "address"),
        ("family:exact=LEVEQUE", "family:exact"),
        ("family=LEV%00", "family"),  # a NUL: PostgreSQL refuses it in a text value
        ("identifier=S01%00", "identifier"),
    ],
)
def test_a_malformed_parameter_is_a_400_naming_it(served, query, named):
    base, _, _ = served
    status, headers, body = get(f"{base}/fhir/Patient?{query}", token=TOKEN)
    assert status == 400 and headers["content-type"].startswith("application/fhir+json")
    check_outcome(body)
    assert named in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("after", ["1e23", "100000000000000000000000", "%C2%B2"])
def test_a_malformed_after_of_the_change_feed_is_a_400(served, after):
    base, _, _ = served
    status, _, body = get(f"{base}/events?after={after}", token=TOKEN)
    assert status == 400 and "after" in body["error"]


def raw_get(url: str, host: str) -> dict:
    """A GET whose Host header says `host` (what a client behind a proxy, or a forger, sends)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("GET", f"{parts.path}?{parts.query}", skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.endheaders()
        answer = conn.getresponse()
        assert answer.status == 200
        return json.loads(answer.read())
    finally:
        conn.close()


def _urls(bundle: dict) -> list[str]:
    return [e["fullUrl"] for e in bundle["entry"]] + [link["url"] for link in bundle["link"]]


def test_links_use_the_public_url_never_the_host_header(db_url, tmp_path, feed):
    feed.ok(*(message("A28", p, f"P-{p.ipp}") for p in (ACCENTED, QUALIFIED, NO_GIVEN)))
    public = "https://identities.example.org:8443/pamfr"
    # a Host header the port does not answer to is refused (400, http/access.py); among the
    # accepted ones, the links follow public_url, else the address the connection reached
    with fhir_api(db_url, tmp_path / "public.log", PAMFR_HTTP_PUBLIC_URL=public + "/") as base:
        bundle = raw_get(f"{base}/fhir/Patient?_count=1", host="localhost")
        urls = _urls(bundle)
        assert len(urls) == 3 and all(u.startswith(public + "/fhir/Patient") for u in urls), urls
    with fhir_api(db_url, tmp_path / "listen.log") as base:
        assert base.startswith("http://127.0.0.1:")
        bundle = raw_get(f"{base}/fhir/Patient?_count=1", host="localhost")
        urls = _urls(bundle)
        assert all(u.startswith(f"{base}/fhir/Patient") for u in urls), urls


@pytest.mark.parametrize(
    "bad", ["identities.example.org", "ftp://x.example.org", "https://x.example.org/?a=1"]
)
def test_a_public_url_that_cannot_be_a_base_is_refused_in_one_line(sqlite_url, bad):
    result = run_cli(
        "api", "--db", sqlite_url, "--listen", "127.0.0.1:0", env={"PAMFR_HTTP_PUBLIC_URL": bad}
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "public_url" in line


def count_statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_page_and_a_history_cost_a_few_statements_whatever_their_size(db_url, engine, feed):
    people = [Person(ipp=f"C{n:03}", birth_name=f"COUNT{n:03}") for n in range(100)]
    feed.ok(*(message("A28", p, f"C-{p.ipp}") for p in people))
    for n in range(5):  # five more versions of one patient
        feed.ok(message("A31", replace(people[0], used_name=f"U{n}"), f"R-{n}"))
    seen = count_statements(engine)
    costs = {}
    for size in (10, 100):
        with reading(engine) as conn:
            start = len(seen)
            page = search_page(conn, PatientCriteria(), after=None, count=size)
            costs[size] = len(seen) - start
        assert len(page.versions) == size and page.total == 100
        for version in page.versions:
            resource = patient_resource(
                version.identity,
                version_id=version.version_id,
                last_updated=version.last_updated,
                replaces=version.replaces,
            )
            check_patient(resource)
    assert costs[10] == costs[100] <= 10, costs
    pid = feed.show("--ipp", "C000")["id"]
    other = feed.show("--ipp", "C001")["id"]
    with reading(engine) as conn:
        start = len(seen)
        versions = patient_versions(conn, pid)
        history_cost = len(seen) - start
        start = len(seen)
        assert len(patient_versions(conn, other)) == 1
        single_cost = len(seen) - start
        start = len(seen)
        oldest = find_version(conn, pid, versions[0].version_id)
        vread_cost = len(seen) - start
    assert len(versions) == 6 and oldest == versions[0]
    assert oldest.identity.used_name is None and versions[-1].identity.used_name == "U4"
    assert history_cost <= 10 and vread_cost <= history_cost, (history_cost, vread_cost)
    assert single_cost <= history_cost


def test_an_unpublished_zfd_code_is_applied_kept_in_the_history_not_put_in_fhir(db_url, feed):
    person = replace(QUALIFIED, ipp="Z01", zfd5="AV")
    text = re.sub(r"ZFD\|[^\r]*", "ZFD|||Y|N|AV|20211201|LEP||", message("A28", person, "Z-1"))
    feed.ok(text)
    view = feed.show("--ipp", "Z01")
    assert (view["identity_mode"], view["identity_document"]) == ("AV", "LEP")
    (row,) = feed.history("--ipp", "Z01")
    assert row["changes"]["identity_document"][1] == "LEP"
    assert row["changes"]["identity_mode"][1] == "AV"
    shown = StoredIdentity.from_json(view)  # the typed value the document was printed from
    resource = patient_resource(shown, version_id="1", last_updated="2026-01-01T00:00:00+00:00")
    check_patient(resource, view)
    subs = {s["url"] for e in resource["extension"] for s in e.get("extension", [])}
    assert "identityStatus" in subs
    assert not {"validationMode", "methodCollection"} & subs
