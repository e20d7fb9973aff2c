"""The FHIR read API against a real `pamfr serve` (and `pamfr api`) over real sockets, on
SQLite and PostgreSQL: identities stored by feeding HL7 messages over MLLP, read back as FR
Core Patient resources, each validated (tests/frcore.py), and by a FHIR client (fhirpy)."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from fhirpy import SyncFHIRClient
from sqlalchemy import select

from pamfr.hl7.samples import AUTHORITY, Person, message, nir_with_key
from pamfr.store.db import make_engine
from pamfr.store.schema import message as message_table
from tests.frcore import (
    check_bundle,
    check_capability,
    check_outcome,
    check_patient,
    ins_identifiers,
    reliability,
)
from tests.helpers import Daemon, pamfr_api, run_cli, send, show_json, start_daemon
from tests.mllp_harness import with_pid

TOKEN = "dpi-0123456789abcdef0123"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
NIR_1 = nir_with_key("2790363220123")
NIR_2 = nir_with_key("2790363220456")
SECRET_NAMES = ("QUALIFNAME", "PROVNAME", "VALIDNAME", "NSNAME", "DURANDUSED")
ENV = {
    "PAMFR_RECEIVER_PARSE_WORKERS": "1",
    "PAMFR_HTTP_FHIR": "true",
    "PAMFR_HTTP_TOKENS": json.dumps({"dpi": TOKEN}),
}

QUALIFIED = Person(
    ipp="FH01",
    birth_name="QUALIFNAME",
    given_names=("MARIE", "ANNE", "LOUISE"),
    ins=NIR_1,
    pid32=("VALI",),
)
PROVISIONAL = Person(ipp="FH02", birth_name="PROVNAME", pid32=("PROV", "DOUT"), birth_date="1979")
VALIDATED = Person(ipp="FH03", birth_name="VALIDNAME", sex="M", birth_date="197903")
NAMESPACE_ONLY = Person(ipp="FH04", birth_name="NSNAME", authority="HOSP NS", pid32=("PROV",))


def http_port(daemon: Daemon) -> int:
    found = re.search(r"HTTP port on [^ ]+:(\d+)", daemon.log())
    assert found, daemon.log()
    return int(found.group(1))


def get(url: str, token: str | None = TOKEN, context=None) -> tuple[int, dict, dict | str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            status, headers, body = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, dict(exc.headers), exc.read()
    text = body.decode()
    kind = headers.get("content-type", "")
    return status, headers, json.loads(text) if "json" in kind else text


def a47_new_ins(person: Person, control_id: str, prior_ins: str, new_ins: str) -> str:
    """An A47 of the INS life cycle: MRG-1 the previous INS, PID-3 the IPP and the new one."""
    pid3 = (
        f"{person.ipp}^^^{AUTHORITY}^PI~{new_ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    )
    text = with_pid(message("A47", person, control_id, prior_ipp=""), f3=pid3)
    prior = f"{prior_ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    return re.sub(r"MRG\|[^\r]*", f"MRG|{prior}", text)


def message_ids(db_url: str) -> dict[str, str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(message_table.c.control_id, message_table.c.id))
            return {control: str(i) for control, i in rows}
    finally:
        engine.dispose()


def test_patients_read_searched_and_versioned_over_fhir(db_url, tmp_path):
    daemon = start_daemon(db_url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=ENV)
    try:
        port = http_port(daemon)
        base = f"http://127.0.0.1:{port}/fhir"
        updated = Person(**{**QUALIFIED.__dict__, "used_name": "DURANDUSED"})
        acks = send(
            daemon.port,
            [
                message("A28", QUALIFIED, "FH-1"),
                message("A28", PROVISIONAL, "FH-2"),
                message("A28", VALIDATED, "FH-3"),
                message("A28", NAMESPACE_ONLY, "FH-4"),
                message("A31", updated, "FH-5"),  # a new version: the used name
                a47_new_ins(updated, "FH-6", NIR_1, NIR_2),  # the INS replaced
                message("A40", VALIDATED, "FH-7", prior_ipp="FH02"),  # FH02 merged into FH03
            ],
        )
        assert [a.code for a in acks] == ["AA"] * 7, [a.errs for a in acks]
        ids = {p: show_json(db_url, "--ipp", p)["id"] for p in ("FH01", "FH02", "FH03", "FH04")}
        views = {p: show_json(db_url, "--ipp", p) for p in ids}
        assert views["FH01"]["ins"]["value"] == NIR_2 and views["FH01"]["ins_usable"]
        sent = message_ids(db_url)

        # Access: the data needs the token; health and metrics keep their behaviour.
        status, headers, body = get(f"{base}/Patient/{ids['FH01']}", token=None)
        assert status == 401 and body["resourceType"] == "OperationOutcome"
        assert headers["www-authenticate"].startswith("Bearer")
        assert "QUALIFNAME" not in json.dumps(body)
        assert get(f"{base}/Patient/{ids['FH01']}", token="not-the-token-0123456789")[0] == 401
        assert get(f"{base}/metadata", token=None)[0] == 200  # no patient data: open
        assert get(f"http://127.0.0.1:{port}/healthz", token=None)[0] == 200
        assert get(f"http://127.0.0.1:{port}/metrics", token=None)[0] == 200

        status, headers, capability = get(f"{base}/metadata")
        assert status == 200 and headers["content-type"].startswith("application/fhir+json")
        check_capability(capability)
        assert capability["fhirVersion"] == "4.0.1"
        assert capability["implementationGuide"] == [
            "https://hl7.fr/ig/fhir/core/ImplementationGuide/hl7.fhir.fr.core|2.2.0"
        ]

        # Read: every patient, validated, its ETag its versionId (the last message that
        # changed it), the INS only on the qualified one.
        resources = {}
        for p, pid in ids.items():
            status, headers, resource = get(f"{base}/Patient/{pid}")
            assert status == 200, resource
            assert headers["content-type"].startswith("application/fhir+json")
            check_patient(resource, views[p])
            assert headers["etag"] == f'W/"{resource["meta"]["versionId"]}"'
            resources[p] = resource
        qualified = resources["FH01"]
        assert qualified["meta"]["versionId"] == sent["FH-6"]
        assert [(i["system"], i["value"]) for i in ins_identifiers(qualified)] == [
            (INS_TEST, NIR_2)
        ]
        assert reliability(qualified)["identityStatus"] == ["VALI"]
        official = next(n for n in qualified["name"] if n["use"] == "official")
        assert (official["family"], official["given"]) == ("QUALIFNAME", ["MARIE"])
        assert official["extension"][0]["valueString"] == "MARIE ANNE LOUISE"
        assert {"use": "usual", "family": "DURANDUSED"} in qualified["name"]
        assert any(
            i["system"] == "urn:oid:1.2.250.1.999.1.1" and i["value"] == "FH01"
            for i in qualified["identifier"]
        )
        assert len(qualified["meta"]["profile"]) == 2
        # the merged record points at its survivor, the survivor at it
        merged, survivor = resources["FH02"], resources["FH03"]
        assert merged["active"] is False
        assert merged["link"] == [
            {"other": {"reference": f"Patient/{ids['FH03']}"}, "type": "replaced-by"}
        ]
        assert survivor["link"] == [
            {"other": {"reference": f"Patient/{ids['FH02']}"}, "type": "replaces"}
        ]
        assert merged["meta"]["versionId"] == survivor["meta"]["versionId"] == sent["FH-7"]
        assert reliability(merged)["identityStatus"] == ["PROV", "DOUT"]
        assert merged["birthDate"] == "1979" and survivor["birthDate"] == "1979-03"
        assert ins_identifiers(survivor) == [] and reliability(survivor)["identityStatus"] == [
            "VALI"
        ]
        # an authority known by its namespace only: the pamfr-owned URI
        (ipp,) = resources["FH04"]["identifier"]
        assert ipp["system"] == "urn:pamfr:authority:HOSP%20NS"

        # History: one version per message that changed the patient, newest first.
        status, _, history = get(f"{base}/Patient/{ids['FH01']}/_history")
        assert status == 200
        check_bundle(history, "history")
        versions = [e["resource"] for e in history["entry"]]
        assert [v["meta"]["versionId"] for v in versions] == [
            sent["FH-6"],
            sent["FH-5"],
            sent["FH-1"],
        ]
        assert history["total"] == 3
        assert versions[0] == qualified
        assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT", "POST"]
        for v in versions:
            check_patient(v)
        assert [i["value"] for i in ins_identifiers(versions[1])] == [NIR_1]  # before the A47
        assert {"use": "usual", "family": "DURANDUSED"} in versions[1]["name"]
        assert [n["use"] for n in versions[2]["name"]] == ["official"]  # before the A31
        assert [i["value"] for i in ins_identifiers(versions[2])] == [NIR_1]
        for v in versions:
            vid = v["meta"]["versionId"]
            status, headers, one = get(f"{base}/Patient/{ids['FH01']}/_history/{vid}")
            assert status == 200 and one == v and headers["etag"] == f'W/"{vid}"'
        status, _, body = get(f"{base}/Patient/{ids['FH01']}/_history/{sent['FH-2']}")
        assert status == 404 and check_outcome(body)
        # the merged record's versions: created, then merged away
        _, _, merged_history = get(f"{base}/Patient/{ids['FH02']}/_history")
        check_bundle(merged_history, "history")
        assert [e["resource"]["active"] for e in merged_history["entry"]] == [False, True]
        assert "link" not in merged_history["entry"][1]["resource"]

        # Search: by INS (only the one in force), by IPP, by traits.
        def search(query: str) -> dict:
            status, _, found = get(f"{base}/Patient?{query}")
            assert status == 200, found
            check_bundle(found, "searchset")
            return found

        def found_ids(bundle: dict) -> list[str]:
            return [e["resource"]["id"] for e in bundle.get("entry", [])]

        by_ins = search(f"identifier={INS_TEST}|{NIR_2}")
        assert (by_ins["total"], found_ids(by_ins)) == (1, [str(ids["FH01"])])
        assert search(f"identifier={INS_TEST}|{NIR_1}")["total"] == 0  # replaced
        assert search(f"identifier=urn:oid:1.2.250.1.213.1.4.8|{NIR_2}")["total"] == 0
        assert found_ids(search("identifier=urn:oid:1.2.250.1.999.1.1|FH03")) == [str(ids["FH03"])]
        assert found_ids(search("identifier=FH02")) == [str(ids["FH02"])]
        assert found_ids(search("identifier=urn:pamfr:authority:HOSP%2520NS|FH04")) == [
            str(ids["FH04"])
        ]
        assert search("identifier=http://example.org/other|FH01")["total"] == 0
        assert found_ids(search("family=qualif")) == [str(ids["FH01"])]
        assert found_ids(search("family=duranduse")) == [str(ids["FH01"])]
        assert found_ids(search("given=mari")) == [str(ids["FH01"])]
        assert search("given=louise")["total"] == 0  # a later birth given name: not a given
        assert found_ids(search("gender=male")) == [str(ids["FH03"])]
        assert found_ids(search("active=false")) == [str(ids["FH02"])]
        assert set(found_ids(search("birthdate=1979-03-28"))) == {
            str(ids["FH01"]),
            str(ids["FH04"]),
        }
        assert set(found_ids(search("birthdate=1979"))) == {str(i) for i in ids.values()}
        everyone = search("")
        assert everyone["total"] == 4
        # paging: _count=1 and the next links followed to the end
        page = search("_count=1&active=true")
        assert page["total"] == 3
        seen = found_ids(page)
        while any(link["relation"] == "next" for link in page["link"]):
            (following,) = [link["url"] for link in page["link"] if link["relation"] == "next"]
            status, _, page = get(following)
            assert status == 200
            check_bundle(page, "searchset")
            assert len(page.get("entry", [])) == 1 and page["total"] == 3
            seen += found_ids(page)
        assert seen == [str(ids[p]) for p in ("FH01", "FH03", "FH04")]

        # Errors: OperationOutcome, never a stack trace.
        for path, code in (
            ("Patient?address=PARIS", 400),
            ("Patient?family:exact=QUALIFNAME", 400),
            ("Patient?_count=%C2%B2", 400),
            ("Patient?_cursor=x", 400),
            ("Patient?identifier=%7C", 400),
            ("Patient?birthdate=1979-13-01", 400),
            ("Patient?birthdate=gt1979", 400),
            ("Patient?_count=0", 400),
            ("Patient?gender=x", 400),
            ("Patient/999999", 404),
            ("Patient/abc", 404),
            ("Patient/abc/_history", 404),
            ("Observation", 404),
        ):
            status, headers, body = get(f"{base}/{path}")
            assert status == code, (path, body)
            assert headers["content-type"].startswith("application/fhir+json")
            check_outcome(body)
        status, _, body = get(f"{base}/Patient?address=PARIS")
        diagnostics = body["issue"][0]["diagnostics"]
        assert "unknown or unsupported search parameter 'address'" in diagnostics

        # A FHIR client reads a patient by INS and by id, with no error.
        client = SyncFHIRClient(base, authorization=f"Bearer {TOKEN}")
        (found,) = client.resources("Patient").search(identifier=f"{INS_TEST}|{NIR_2}").fetch()
        assert found.id == str(ids["FH01"])
        read = client.reference("Patient", str(ids["FH01"])).to_resource()
        assert read.serialize() == qualified
        assert [p.id for p in client.resources("Patient").search(active="false").fetch_all()] == [
            str(ids["FH02"])
        ]
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert "(token dpi)" in log and TOKEN not in log
    for secret in (*SECRET_NAMES, NIR_1, NIR_2, "1979-03-28", "19790328"):
        assert secret not in log, secret


def test_fhir_off_by_default(sqlite_url, tmp_path):
    daemon = start_daemon(
        sqlite_url,
        tmp_path / "serve.log",
        "--http",
        "127.0.0.1:0",
        env={"PAMFR_RECEIVER_PARSE_WORKERS": "1"},
    )
    try:
        status, _, _ = get(f"http://127.0.0.1:{http_port(daemon)}/fhir/metadata", token=None)
        assert status == 404
    finally:
        assert daemon.stop() == 0


def test_patient_data_is_not_served_off_the_loopback_without_tls_and_tokens(sqlite_url, tmp_path):
    env = {"PAMFR_RECEIVER_PARSE_WORKERS": "1", "PAMFR_HTTP_FHIR": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "pamfr", "serve", "--port", "0", "--db", sqlite_url]
        + ["--http", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PAMFR_HTTP_TOKENS": json.dumps({"a": TOKEN})},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "cannot start: http.listen 0.0.0.0 is not the loopback" in proc.stderr
    assert "needs TLS (http.tls_cert and http.tls_key)" in proc.stderr
    # pamfr api: one line, exit 2
    result = run_cli(
        "api", "--db", sqlite_url, "--listen", "0.0.0.0:8091", env={"PAMFR_CONFIG": ""}
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "Error: --listen 0.0.0.0 is not the loopback: patient data off this host needs TLS "
        "(http.tls_cert and http.tls_key) and tokens (http.tokens) or client certificates "
        "(http.tls_client_ca)"
    ]
    result = run_cli("api", "--db", sqlite_url, "--listen", "nowhere", env={"PAMFR_CONFIG": ""})
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "--listen" in result.stderr


@pytest.fixture
def pki(tmp_path):
    from tests.reliability.pki import make_pki

    return make_pki(tmp_path / "pki")


def test_pamfr_api_alone_over_tls_with_a_token(db_url, tmp_path, pki, feed):
    feed.ok(message("A28", QUALIFIED, "API-1"))
    settings = {
        "PAMFR_HTTP_TLS_CERT": str(pki.server.cert),
        "PAMFR_HTTP_TLS_KEY": str(pki.server.key),
        "PAMFR_HTTP_TOKENS": json.dumps({"reader": TOKEN}),
    }
    log_path = tmp_path / "api.log"
    with pamfr_api(db_url, log_path, settings) as port:
        context = ssl.create_default_context(cafile=str(pki.ca))
        base = f"https://127.0.0.1:{port}"
        assert get(f"{base}/healthz", token=None, context=context)[0] == 200
        assert get(f"{base}/fhir/Patient?identifier=FH01", None, context)[0] == 401
        status, _, bundle = get(f"{base}/fhir/Patient?identifier=FH01", context=context)
        assert status == 200 and bundle["total"] == 1
        check_bundle(bundle, "searchset")
        check_patient(bundle["entry"][0]["resource"], show_json(db_url, "--ipp", "FH01"))
    text = log_path.read_text()
    assert "over TLS" in text and "(token reader)" in text and TOKEN not in text
    assert "QUALIFNAME" not in text and NIR_1 not in text
