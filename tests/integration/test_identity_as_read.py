"""Two identity cases as every reader sees them (`patient show`, the history, FHIR), through
a real daemon: a birth date known only by its year (ZFD-1 "date lunaire") and an INS the gate
refuses whatever its CX-5 type."""

from __future__ import annotations

import json
import re
import urllib.request

from pamfr.hl7.samples import Person, message, nir_with_key
from tests.helpers import run_cli, send, show_json, start_daemon
from tests.mllp_harness import with_pid

TOKEN = "lunar-reader-0123456789"
ENV = {
    "PAMFR_RECEIVER_PARSE_WORKERS": "1",
    "PAMFR_HTTP_FHIR": "true",
    "PAMFR_HTTP_TOKENS": json.dumps({"reader": TOKEN}),
}
NIR_OID = "1.2.250.1.213.1.4.8"


def fhir_patient(port: int, patient_id: int) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/fhir/Patient/{patient_id}")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_a_year_only_birth_date_and_a_refused_ins_as_readers_see_them(sqlite_url, tmp_path):
    lunar = with_pid(message("A28", Person("LUN1"), "L1"), f7="")
    lunar = lunar.replace("ZFD|||Y|N|INSI|", "ZFD|00^00^1960||Y|N|INSI|")
    nir = nir_with_key("1790363220123")
    pid3 = f"INS1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{nir}^^^ASIP-SANTE-INS-NIR&{NIR_OID}&ISO^INS-NIR"
    refused = with_pid(message("A28", Person("INS1"), "L2"), f3=pid3, f32="PROV")
    truncated = with_pid(message("A28", Person("LUN2"), "L3"), f7="")
    truncated = truncated.replace("ZFD|||Y|N|INSI|", "ZFD|30^02^1961||Y|N|INSI|")
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=ENV)
    try:
        acks = send(daemon.port, [lunar, refused, truncated])
        assert [a.code for a in acks] == ["AA", "AA", "AA"], [a.errs for a in acks]
        assert acks[0].errs == []
        assert [(e[2], e[3].split("^")[0], e[4]) for e in acks[2].errs] == [("ZFD^1^1", "102", "W")]
        http = int(re.search(r"HTTP port on [^ ]+:(\d+)", daemon.log()).group(1))

        view = show_json(sqlite_url, "--ipp", "LUN1")
        assert view["birth_date"] == "1960"
        shown = run_cli("patient", "show", "--ipp", "LUN1", "--db", sqlite_url)
        assert re.search(r"Birth date\s+1960\s", shown.stdout), shown.stdout
        history = run_cli("patient", "history", "--ipp", "LUN1", "--json", "--db", sqlite_url)
        (created,) = json.loads(history.stdout)
        assert created["changes"]["birth_date"] == [None, "1960"]
        assert fhir_patient(http, view["id"])["birthDate"] == "1960"
        # 30 February: kept to the month, and the history says why
        assert show_json(sqlite_url, "--ipp", "LUN2")["birth_date"] == "1961-02"
        history = run_cli("patient", "history", "--ipp", "LUN2", "--json", "--db", sqlite_url)
        (created,) = json.loads(history.stdout)
        assert [n["finding"] for n in created["notes"]] == ["birth-date-truncated"]

        view = show_json(sqlite_url, "--ipp", "INS1")
        assert [i["value"] for i in view["identifiers"]] == ["INS1"] and view["ins"] is None
        resource = fhir_patient(http, view["id"])
        assert nir not in json.dumps(resource)
        assert [i["value"] for i in resource["identifier"]] == ["INS1"]
    finally:
        assert daemon.stop() == 0
