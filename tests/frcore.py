"""Checks a Patient of the FHIR API as a product would: valid R4 (the fhir.resources models,
R4B, which has R4's Patient) and the FR Core 2.1.0 rules the profiles and their invariants
state. The facts are written here, from FR Core's own sources: tests read nothing outside
tests/."""

from __future__ import annotations

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

CORE = "https://hl7.fr/ig/fhir/core"
PATIENT = f"{CORE}/StructureDefinition/fr-core-patient|2.1.0"
PATIENT_INS = f"{CORE}/StructureDefinition/fr-core-patient-ins|2.1.0"
RELIABILITY = f"{CORE}/StructureDefinition/fr-core-identity-reliability"
BIRTH_LIST = f"{CORE}/StructureDefinition/fr-core-patient-birth-list-given-name"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE = f"{CORE}/StructureDefinition/fr-core-address-insee-code"
INS_SYSTEMS = {
    "urn:oid:1.2.250.1.213.1.4.8": "INS-NIR",
    "urn:oid:1.2.250.1.213.1.4.9": "INS-NIA",
    "urn:oid:1.2.250.1.213.1.4.10": "INS-NIR-TEST",
    "urn:oid:1.2.250.1.213.1.4.11": "INS-NIR-DEMO",
}
STATUSES = {"PROV", "RECUP", "VALI", "QUAL"}
METHODS = {"SM", "CV", "INSI", "CB", "RFID", "AV"}
MODES = {"CN", "PA", "CS", "eCN", "IN", "AV", "LECV", "AN", "LEP", "CC", "ANCV"}
COMMENTS = set(
    "VIDE DOUB DESA DPOT DOUA COLP COLV FILI CACH ANOM IDVER RECD IDRA USUR HOMD INVA "
    "HOMA FICT DOUT".split()
)
SUBS_2_1_0 = {
    "methodCollection": "valueCoding",
    "dateCollection": "valueDate",
    "identityStatus": "valueCoding",
    "comment": "valueCoding",
    "validationDate": "valueDate",
    "validationMode": "valueCoding",
}


def _ext(holder: dict, url: str) -> list[dict]:
    return [e for e in holder.get("extension", []) if e["url"] == url]


def reliability(resource: dict) -> dict[str, list]:
    """The identity reliability sub-extensions: name -> values (codes or dates)."""
    (ext,) = _ext(resource, RELIABILITY)
    out: dict[str, list] = {}
    for sub in ext["extension"]:
        kind = SUBS_2_1_0[sub["url"]]
        value = sub[kind]
        out.setdefault(sub["url"], []).append(value["code"] if kind == "valueCoding" else value)
    return out


def ins_identifiers(resource: dict) -> list[dict]:
    return [i for i in resource.get("identifier", []) if i.get("system") in INS_SYSTEMS]


def check_patient(resource: dict, view: dict | None = None) -> Patient:
    """Raises AssertionError naming the rule broken; `view` (patient show --json) checks
    what the resource may say of the stored identity."""
    model = Patient.model_validate(resource)  # R4 structure and datatypes
    profiles = resource["meta"]["profile"]
    assert PATIENT in profiles, profiles
    assert set(profiles) <= {PATIENT, PATIENT_INS}, profiles
    assert resource["meta"]["versionId"].isdigit()
    rel = reliability(resource)
    for name, values in rel.items():
        if name != "comment":
            assert len(values) == 1, f"{name} 0..1"
    (status,) = rel["identityStatus"]  # pamfr always says it
    assert status in STATUSES
    assert set(rel.get("methodCollection", [])) <= METHODS
    assert set(rel.get("validationMode", [])) <= MODES  # required binding
    comments = rel.get("comment", [])
    assert set(comments) <= COMMENTS
    # RNIV EXI SI 09 (2.2's fr-core-identity-reliability-1/-2, true of 2.1.0 data too)
    if {"DOUT", "FICT"} & set(comments):
        assert status == "PROV", "DOUT or FICT => PROV"
    assert not {"DOUT", "FICT"} <= set(comments), "FICT and DOUT together"
    ins = ins_identifiers(resource)
    for ident in ins:
        (coding,) = ident["type"]["coding"]
        assert coding == {
            "system": f"{CORE}/CodeSystem/fr-core-cs-v2-0203",
            "code": INS_SYSTEMS[ident["system"]],
        }
        assert ident["use"] == ("temp" if coding["code"] == "INS-NIA" else "official")
    # the INS slices exist only in the INS profile, for a qualified identity
    if ins:
        assert PATIENT_INS in profiles, "an INS outside fr-core-patient-ins"
        assert status == "VALI" and resource["active"], "an INS on an identity not qualified"
        assert len(ins) == 1
    if PATIENT_INS in profiles:
        # fr-core-1: identityStatus VALI => an INS identifier
        if status == "VALI":
            assert ins, "fr-core-1: VALI without an INS identifier"
        (place,) = _ext(resource, BIRTH_PLACE)
        assert len(_ext(place["valueAddress"], INSEE)) == 1, "birthPlace.inseeCode 1..1"
        assert resource["gender"] in ("male", "female", "unknown")
        assert resource["birthDate"]
        (official,) = [n for n in resource["name"] if n["use"] == "official"]
        assert len(official["given"]) == 1, "official given 1..1"
        assert len(_ext(official, BIRTH_LIST)) == 1, "birth-list-given-name 1..1"
    for link in resource.get("link", []):
        assert link["other"]["reference"].startswith("Patient/")
    kinds = {link["type"] for link in resource.get("link", [])}
    if not resource["active"] and kinds:
        assert kinds == {"replaced-by"} and len(resource["link"]) == 1
    if resource["active"]:
        assert kinds <= {"replaces"}
    if view is not None:
        assert resource["id"] == str(view["id"])
        assert resource["active"] == view["active"]
        usable = bool(view["ins_usable"])
        assert bool(ins) == usable, f"INS shown {bool(ins)}, usable {usable}"
        if usable:
            assert ins[0]["value"] == view["ins"]["value"]
        if not view["active"] and view["merged_into"] is not None:
            assert resource["link"] == [
                {"other": {"reference": f"Patient/{view['merged_into']}"}, "type": "replaced-by"}
            ]
    return model


def check_bundle(resource: dict, kind: str) -> Bundle:
    model = Bundle.model_validate(resource)
    assert resource["type"] == kind
    for entry in resource.get("entry", []):
        check_patient(entry["resource"])
    return model


def check_outcome(resource: dict) -> OperationOutcome:
    return OperationOutcome.model_validate(resource)


def check_capability(resource: dict) -> CapabilityStatement:
    return CapabilityStatement.model_validate(resource)
