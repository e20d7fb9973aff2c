"""The pure mapping of a stored identity to an FR Core 2.2.0 Patient (pamfr/fhir/patient.py),
each resource checked against the published package by tests/frcore.py."""

from __future__ import annotations

import pytest

from pamfr.fhir.patient import (
    NAMESPACE_SYSTEM,
    identifier_system,
    parse_system,
    patient_resource,
    sexes_for,
)
from pamfr.identity.stored import StoredIdentity
from tests.frcore import check_patient, ins_identifiers, reliability

NIR = "279036322012369"


def view(**changes) -> dict:
    """patient_view's shape: a qualified identity whose INS may be used."""
    base = {
        "id": 7,
        "active": True,
        "merged_into": None,
        "identifiers": [
            {"value": "IPP7", "type": "PI", "authority": "CHU-X", "oid": "1.2.250.1.999.1.1"},
            {"value": NIR, "type": "INS", "authority": None, "oid": "1.2.250.1.213.1.4.8"},
        ],
        "ins": {"value": NIR, "oid": "1.2.250.1.213.1.4.8", "kind": "NIR"},
        "ins_usable": True,
        "ins_collision": False,
        "birth_name": "MARTIN",
        "first_given_name": "JEAN",
        "birth_given_names": ["JEAN", "PIERRE"],
        "used_name": None,
        "used_given_name": None,
        "birth_date": "1979-03-28",
        "sex": "M",
        "birth_place_insee": "63220",
        "status": "qualifiee",
        "attributes": [],
        "other_status_codes": [],
        "identity_mode": "INSI",
        "insi_query_date": "20211201",
        "identity_document": "CN",
        "links": [],
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    return {**base, **changes}


def resource(v: dict, replaces=()) -> dict:
    out = patient_resource(
        StoredIdentity.from_json(v),
        version_id="12",
        last_updated="2024-03-06T11:11:54+00:00",
        replaces=replaces,
    )
    check_patient(out, v)
    return out


def test_a_qualified_identity_with_a_usable_ins_is_fr_core_patient_ins():
    out = resource(view())
    assert out["meta"]["profile"][1].endswith("fr-core-patient-ins|2.2.0")
    (ins,) = ins_identifiers(out)
    assert (ins["system"], ins["value"], ins["use"]) == (
        "urn:oid:1.2.250.1.213.1.4.8",
        NIR,
        "official",
    )
    assert reliability(out) == {
        "methodCollection": ["INSI"],
        "dateCollection": ["2021-12-01"],
        "identityStatus": ["VALI"],
        "validationMode": ["CN"],
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"ins_collision": True, "ins_usable": False},  # held by another active record too
        {"active": False, "merged_into": 3, "ins_usable": False},  # merged away
    ],
)
def test_a_qualified_identity_whose_ins_may_not_be_used_shows_no_ins(changes):
    out = resource(view(**changes))
    assert ins_identifiers(out) == []
    assert len(out["meta"]["profile"]) == 1
    assert reliability(out)["identityStatus"][0] == "VALI"  # fr-core-1 is the INS profile's


@pytest.mark.parametrize(
    ("status", "attributes", "others", "expected"),
    [
        ("provisoire", ["douteuse"], [], ["PROV", "DOUT"]),
        ("provisoire", ["fictive", "homonyme"], ["DOUB"], ["PROV", "FICT", "HOMA", "DOUB"]),
        ("recuperee", [], ["NOTACODE"], ["PROV"]),  # 0445 has no RECUP; no invented code
        ("validee", ["homonyme"], [], ["VALI", "HOMA"]),
    ],
)
def test_status_and_attributes_are_table_0445_codes(status, attributes, others, expected):
    v = view(
        status=status,
        attributes=attributes,
        other_status_codes=others,
        ins=None,
        ins_usable=False,
        identifiers=view()["identifiers"][:1],
    )
    out = resource(v)
    assert reliability(out)["identityStatus"] == expected
    systems = {
        sub["valueCoding"]["system"]
        for ext in out["extension"]
        for sub in ext.get("extension", [])
        if sub["url"] == "identityStatus"
    }
    assert systems == {"https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"}
    assert "comment" not in reliability(out)


def test_an_ins_collision_is_a_colp_reliability_extension():
    out = resource(view(ins_collision=True, ins_usable=False))
    assert reliability(out)["identityStatus"] == ["VALI", "COLP"]


@pytest.mark.parametrize(
    ("zfd7", "mode", "ins_mode"),
    [
        ("CN", "CN", "CN"),
        ("PA", "PA", "PA"),
        ("LE", "LE", "LE"),
        ("AC", "AC", None),  # published, but not in the INS profile's narrower value set
        ("PC", "PC", None),
        ("CE", "CE", None),
        ("TC", "TC", None),
        ("LEP", None, None),  # not a published code
        (None, None, None),
    ],
)
def test_zfd7_maps_to_a_published_validation_mode_or_nothing(zfd7, mode, ins_mode):
    found = reliability(resource(view(identity_document=zfd7)))
    assert found.get("validationMode") == ([ins_mode] if ins_mode else None)
    validated = view(identity_document=zfd7, status="validee", ins_usable=False)
    found = reliability(resource(validated))
    assert found.get("validationMode") == ([mode] if mode else None)


def test_zfd5_and_zfd6_unknown_or_unreadable_are_left_out():
    found = reliability(resource(view(identity_mode="AV", insi_query_date="soon")))
    assert "methodCollection" not in found and "dateCollection" not in found
    found = reliability(resource(view(insi_query_date="20211201093000")))
    assert found["dateCollection"] == ["2021-12-01"]


def test_names_gender_birth_date_and_birth_place():
    out = resource(
        view(
            used_name="DUPONT",
            used_given_name="JEANNOT",
            sex="F",
            birth_date="1979",
            status="validee",
            ins=None,
            ins_usable=False,
        )
    )
    official, usual = out["name"]
    assert (official["family"], official["given"]) == ("MARTIN", ["JEAN"])
    assert official["extension"][0]["valueString"] == "JEAN PIERRE"
    assert usual == {"use": "usual", "family": "DUPONT", "given": ["JEANNOT"]}
    assert (out["gender"], out["birthDate"]) == ("female", "1979")
    place = out["extension"][1]["valueAddress"]["extension"][0]["valueCoding"]
    assert place["code"] == "63220"
    out = resource(
        view(sex="N", birth_place_insee=None, ins=None, ins_usable=False, status="provisoire")
    )
    assert "gender" not in out and len(out["extension"]) == 1
    for sex in ("O", "A"):  # no code in FR Core's required gender value set
        assert "gender" not in resource(view(sex=sex, status="validee", ins_usable=False))


def test_born_abroad_is_a_birth_country_and_the_ins_stays_on_fr_core_patient():
    out = resource(view(birth_place_insee="99134"))
    (place,) = [e for e in out["extension"] if e["url"].endswith("patient-birthPlace")]
    assert place["valueAddress"] == {"country": "99134"}
    assert [p.rsplit("/", 1)[1] for p in out["meta"]["profile"]] == ["fr-core-patient|2.2.0"]
    assert [i["value"] for i in ins_identifiers(out)] == [NIR]
    unknown = resource(view(birth_place_insee="99999", status="validee", ins_usable=False))
    assert not [e for e in unknown["extension"] if e["url"].endswith("patient-birthPlace")]


def test_an_nia_is_official():
    nia = {"value": "1" + NIR[1:], "oid": "1.2.250.1.213.1.4.9", "kind": "NIA"}
    (ins,) = ins_identifiers(resource(view(ins=nia)))
    assert (ins["use"], ins["type"]["coding"][0]["code"]) == ("official", "INS-NIA")


def test_a_birth_name_without_given_name_is_not_an_official_name():
    out = resource(
        view(first_given_name=None, birth_given_names=[], status="provisoire", ins_usable=False)
    )
    assert out["name"] == [{"family": "MARTIN"}]


def test_identifier_types_uses_and_systems():
    idents = [
        {"value": "IPP7", "type": "PI", "authority": "CHU-X", "oid": "000897406"},
        {"value": NIR, "type": "NH", "authority": "ASIP-SANTE-NIR", "oid": "1.2.250.1.213.1.4.8"},
        {"value": "X1", "type": "NH", "authority": "OTHER", "oid": "1.2.3"},
    ]
    out = resource(view(identifiers=idents, status="validee", ins_usable=False))
    ipp, nh = out["identifier"]
    assert ipp["system"] == NAMESPACE_SYSTEM + "000897406"
    assert ipp["type"]["coding"][0]["display"] == "Patient internal identifier"
    assert (nh["use"], nh["system"]) == ("official", "urn:oid:1.2.250.1.213.1.4.13")
    qualified = resource(view(identifiers=[*idents, view()["identifiers"][1]]))
    assert [i["type"]["coding"][0]["code"] for i in qualified["identifier"]] == ["INS-NIR", "PI"]


def test_merge_links():
    merged = resource(view(active=False, merged_into=3, ins_usable=False))
    assert merged["link"] == [{"other": {"reference": "Patient/3"}, "type": "replaced-by"}]
    survivor = resource(view(), replaces=[9, 4])
    assert [link["other"]["reference"] for link in survivor["link"]] == [
        "Patient/4",
        "Patient/9",
    ]


def test_identifier_systems_round_trip():
    assert identifier_system("CHU-X", "1.2.250.1.999.1.1") == "urn:oid:1.2.250.1.999.1.1"
    system = identifier_system("HOSP NS/2", None)
    assert system == NAMESPACE_SYSTEM + "HOSP%20NS%2F2"
    assert parse_system(system) == ("key", "HOSP NS/2")
    assert identifier_system("CHU-X", "000897406") == NAMESPACE_SYSTEM + "000897406"
    assert parse_system("urn:oid:1.2.250.1.213.1.4.8") == ("oid", "1.2.250.1.213.1.4.8")
    assert parse_system("urn:oid:not-an-oid") is None
    assert parse_system("http://example.org/ipp") is None


def test_gender_search_codes():
    assert sexes_for(["male", "other"]) == ("M",)
    with pytest.raises(ValueError, match="gender 'x'"):
        sexes_for(["x"])
