"""The package-driven check (tests/frcore.py) itself: it finds, in resources shaped as the
mapping served them before FR Core 2.2.0 was followed, what a consumer validating against the
published package finds."""

from __future__ import annotations

import copy

import pytest

from pamfr.fhir.patient import patient_resource
from pamfr.identity.stored import StoredIdentity
from tests.frcore import check_package
from tests.unit.test_fhir_patient import view

CORE = "https://hl7.fr/ig/fhir/core"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def served() -> dict:
    out = patient_resource(
        StoredIdentity.from_json(view()), version_id="1", last_updated="2026-01-01T00:00:00+00:00"
    )
    assert check_package(out) == []
    return copy.deepcopy(out)


def reliability_subs(resource: dict) -> list[dict]:
    return resource["extension"][0]["extension"]


def set_sub(resource: dict, url: str, system: str, code: str) -> None:
    subs = reliability_subs(resource)
    subs[:] = [s for s in subs if s["url"] != url]
    subs.append({"url": url, "valueCoding": {"system": system, "code": code}})


def unpublished_status(r: dict) -> None:
    set_sub(r, "identityStatus", f"{CORE}/CodeSystem/fr-core-cs-identity-status", "VALI")


def comment_sub_extension(r: dict) -> None:
    reliability_subs(r).append(
        {"url": "comment", "valueCoding": {"system": f"{CORE}/CodeSystem/x", "code": "DOUT"}}
    )


def validation_mode_lep(r: dict) -> None:
    set_sub(r, "validationMode", f"{CORE}/CodeSystem/fr-core-cs-mode-validation-identity", "LEP")


def method_av(r: dict) -> None:
    set_sub(r, "methodCollection", f"{CORE}/CodeSystem/fr-core-cs-method-collection", "AV")


def pi_without_display(r: dict) -> None:
    (ipp,) = [i for i in r["identifier"] if i["type"]["coding"][0]["code"] == "PI"]
    ipp["type"] = {"coding": [{"system": V2_0203, "code": "PI"}]}


def not_an_oid(r: dict) -> None:
    (ipp,) = [i for i in r["identifier"] if i["type"]["coding"][0]["code"] == "PI"]
    ipp["system"] = "urn:oid:000897406"


def official_name_without_given(r: dict) -> None:
    del r["name"][0]["given"]


def nia_temp(r: dict) -> None:
    r["identifier"][0].update(
        use="temp",
        system="urn:oid:1.2.250.1.213.1.4.9",
        type={"coding": [{"system": f"{CORE}/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIA"}]},
    )


def billing_nir_without_use(r: dict) -> None:
    r["identifier"].append(
        {
            "type": {"coding": [{"system": V2_0203, "code": "NH"}]},
            "system": "urn:oid:1.2.250.1.213.1.4.8",
            "value": "156059912345678",
        }
    )


def gender_other(r: dict) -> None:
    r["gender"] = "other"


def version_2_1_0(r: dict) -> None:
    r["meta"]["profile"] = [p.replace("2.2.0", "2.1.0") for p in r["meta"]["profile"]]


def no_ins_identifier(r: dict) -> None:
    r["identifier"] = [i for i in r["identifier"] if "1.2.250.1.213" not in i["system"]]


@pytest.mark.parametrize(
    ("fault", "found"),
    [
        (unpublished_status, "fr-core-cs-identity-status is not one of"),
        (comment_sub_extension, "sub-extension 'comment' is not defined"),
        (validation_mode_lep, "not in required"),
        (method_av, "code 'AV' is not in"),
        (pi_without_display, "does not match patternCodeableConcept"),
        (not_an_oid, "urn:oid:000897406 is not an OID"),
        (official_name_without_given, "officialName.given: 0 present, 1 required"),
        (nia_temp, "invariant fr-core-1"),
        (billing_nir_without_use, "NSS-NIR.use: 0 present, 1 required"),
        (gender_other, "code 'other' not in required"),
        (version_2_1_0, "the package is 2.2.0"),
        (no_ins_identifier, "invariant fr-core-1"),
    ],
)
def test_the_check_finds_what_the_published_package_forbids(fault, found):
    resource = served()
    fault(resource)
    errors = check_package(resource)
    assert any(found in e for e in errors), errors
