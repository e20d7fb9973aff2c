"""A stored identity as an FR Core Patient (FHIR R4, FR Core 2.2.0).

Pure: it takes a `pamfr.identity.stored.StoredIdentity` (the patient as it is now, or a past
version rebuilt from the history) and gives the resource as a JSON-ready dict. docs/fhir.md is the
mapping table, each decision with the file of the FR Core package it follows; the choices it
documents are made here, the published codes are in pamfr/fhir/codes.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, unquote

from pamfr.fhir.codes import (
    CODES_0445,
    CS_0445,
    CS_FR_V2_0203,
    CS_INSEE_COMMUNE,
    CS_METHOD_COLLECTION,
    CS_V2_0203,
    CS_VALIDATION_MODE,
    FR_CORE,
    FR_CORE_VERSION,
    GENDER,
    METHOD_COLLECTION,
    NSS_SYSTEMS,
    V2_0203_DISPLAYS,
    VALIDATION_MODE,
    VALIDATION_MODE_INS,
)
from pamfr.identity.stored import StoredIdentity

FHIR_VERSION = "4.0.1"
FR_CORE_IG = f"{FR_CORE}/ImplementationGuide/hl7.fhir.fr.core"
PROFILE_PATIENT = f"{FR_CORE}/StructureDefinition/fr-core-patient"
PROFILE_PATIENT_INS = f"{FR_CORE}/StructureDefinition/fr-core-patient-ins"

EXT_RELIABILITY = f"{FR_CORE}/StructureDefinition/fr-core-identity-reliability"
EXT_BIRTH_LIST_GIVEN_NAME = f"{FR_CORE}/StructureDefinition/fr-core-patient-birth-list-given-name"
EXT_BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
EXT_INSEE_CODE = f"{FR_CORE}/StructureDefinition/fr-core-address-insee-code"

# An assigning authority without an ISO OID (CX-4.1 alone, or a CX-4.2 whose CX-4.3 is not
# ISO): this pamfr-owned URI, its key (the universal id, else the namespace) percent-encoded,
# is its system. It never changes for a given authority and a search by it finds the patient.
NAMESPACE_SYSTEM = "urn:pamfr:authority:"

# The INS assigning authorities -> FR Core identifier type; use is always official (fr-core-1).
INS_SYSTEMS: dict[str, str] = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR-TEST",
    "1.2.250.1.213.1.4.11": "INS-NIR-DEMO",
}

# pamfr's status -> identityStatus (table 0445): qualifiee is VALI with its INS (fr-core-1),
# validee VALI without, provisoire and recuperee PROV (0445 has no RECUP nor QUAL).
IDENTITY_STATUS = {
    "provisoire": "PROV",
    "recuperee": "PROV",
    "validee": "VALI",
    "qualifiee": "VALI",
}
ATTRIBUTE_CODES = {"douteuse": "DOUT", "fictive": "FICT", "homonyme": "HOMA"}
COLLISION_CODE = "COLP"  # an INS held by two active records: collision potentielle
SEXES_OF_GENDER: dict[str, tuple[str, ...]] = {
    "male": ("M",),
    "female": ("F",),
    "unknown": ("U",),
    "other": (),  # O and A have no code in FR Core's gender value set: served without gender
}

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_DIGITS = re.compile(r"[0-9]{8}")


def canonical(url: str) -> str:
    """A profile's canonical URL pinned to the FR Core version emitted."""
    return f"{url}|{FR_CORE_VERSION}"


def is_oid(text: str | None) -> bool:
    return bool(text) and _OID.fullmatch(text) is not None


def identifier_system(authority: str | None, oid: str | None) -> str:
    """urn:oid:<OID> when the assigning authority has an ISO OID, else the URI of its key (the
    store's authority_key: the universal id when there is one, else the namespace)."""
    if oid and is_oid(oid):
        return f"urn:oid:{oid}"
    return NAMESPACE_SYSTEM + quote(oid or authority or "", safe="")


def parse_system(system: str) -> tuple[str, str] | None:
    """("oid", OID) or ("key", authority_key) for a system this API emits; None otherwise."""
    if system.startswith("urn:oid:") and is_oid(system[8:]):
        return "oid", system[8:]
    if system.startswith(NAMESPACE_SYSTEM) and len(system) > len(NAMESPACE_SYSTEM):
        return "key", unquote(system[len(NAMESPACE_SYSTEM) :])
    return None


def search_token(system: str) -> tuple[str, str] | None:
    """What an identifier search's system designates among the identifiers pamfr serves:
    ("ins", INS OID), ("nss", the OID a billing NIR is stored under) or ("key", the
    authority_key of an assigning authority); None for a system pamfr never serves."""
    read = parse_system(system)
    if read is None:
        return None
    kind, key = read
    if kind == "oid" and key in INS_SYSTEMS:
        return "ins", key
    stored = {nss: oid for oid, nss in NSS_SYSTEMS.items()}
    if kind == "oid" and key in stored:
        return "nss", stored[key]
    return "key", key


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def _fhir_date(value: str | None) -> str | None:
    """ZFD-6 (a TS, YYYYMMDD[HHMM...]) or an ISO date, as a FHIR date; None if unreadable."""
    if not value:
        return None
    text = value.strip().replace("-", "")
    if not _DIGITS.match(text):
        return None
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}"


def _reliability(identity: StoredIdentity, ins_profile: bool) -> list[dict[str, Any]]:
    """identityReliability extensions: the status with how it was collected and validated,
    then one per identity attribute or other table 0445 code (identityStatus is 0..1 in one
    extension, the extension repeats). A ZFD-5 or ZFD-7 code outside the published code
    systems is left out (the history keeps the message that carried it)."""
    subs: list[dict[str, Any]] = []
    mode = (identity.identity_mode or "").upper()
    if mode in METHOD_COLLECTION:
        subs.append({"url": "methodCollection", "valueCoding": _coding(CS_METHOD_COLLECTION, mode)})
    queried = _fhir_date(identity.insi_query_date)
    if queried:
        subs.append({"url": "dateCollection", "valueDate": queried})
    status = IDENTITY_STATUS.get(identity.status, "PROV")
    subs.append({"url": "identityStatus", "valueCoding": _coding(CS_0445, status)})
    document = (identity.identity_document or "").upper()
    if document in (VALIDATION_MODE_INS if ins_profile else VALIDATION_MODE):
        subs.append({"url": "validationMode", "valueCoding": _coding(CS_VALIDATION_MODE, document)})
    out = [{"url": EXT_RELIABILITY, "extension": subs}]
    codes = [ATTRIBUTE_CODES[a] for a in identity.attributes if a in ATTRIBUTE_CODES]
    codes += [c for c in identity.other_status_codes if c in CODES_0445]
    if identity.ins_collision and identity.active:
        codes.append(COLLISION_CODE)
    for code in dict.fromkeys(c for c in codes if c != status):
        out.append(
            {
                "url": EXT_RELIABILITY,
                "extension": [{"url": "identityStatus", "valueCoding": _coding(CS_0445, code)}],
            }
        )
    return out


def _identifier_type(system: str, code: str) -> dict[str, Any]:
    coding = _coding(system, code)
    if system == CS_V2_0203 and code in V2_0203_DISPLAYS:
        coding["display"] = V2_0203_DISPLAYS[code]
    return {"coding": [coding]}


def _identifiers(identity: StoredIdentity, with_ins: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ins = identity.ins
    if with_ins and ins is not None:
        out.append(
            {
                "use": "official",
                "type": _identifier_type(CS_FR_V2_0203, INS_SYSTEMS[ins.oid]),
                "system": f"urn:oid:{ins.oid}",
                "value": ins.value,
            }
        )
    billing_served: set[str] = set()
    for ident in identity.identifiers:  # never the INS: it is the one above, or none
        kind = ident.type
        entry: dict[str, Any] = {}
        system = identifier_system(ident.authority, ident.oid)
        if kind == "NH":
            # The billing NIR goes in the NSS-NIR / NSS-NIA slices (use official, their own
            # system, one each). With an INS the identity has one official identifier only
            # (fr-core-2), and an NH under another authority fits no slice: left out.
            nss = NSS_SYSTEMS.get(ident.oid)
            if with_ins or nss is None or nss in billing_served:
                continue
            billing_served.add(nss)
            entry["use"] = "official"
            system = f"urn:oid:{nss}"
        elif kind == "PI":
            entry["use"] = "usual"
        elif kind == "RRI":
            entry["use"] = "secondary"
        entry["type"] = _identifier_type(CS_V2_0203, kind)
        entry["system"] = system
        entry["value"] = ident.value
        out.append(entry)
    return out


def _names(identity: StoredIdentity) -> list[dict[str, Any]]:
    names: list[dict[str, Any]] = []
    given_list = [g for g in identity.birth_given_names if g]
    first = identity.first_given_name or (given_list[0] if given_list else None)
    if identity.birth_name and first:
        names.append(
            {
                "extension": [
                    {
                        "url": EXT_BIRTH_LIST_GIVEN_NAME,
                        "valueString": " ".join(given_list) if given_list else first,
                    }
                ],
                "use": "official",
                "family": identity.birth_name,
                "given": [first],
            }
        )
    elif identity.birth_name or first:
        # The officialName slice needs both family and given: a birth name without any given
        # name (or the reverse) is a name without use.
        partial: dict[str, Any] = {}
        if identity.birth_name:
            partial["family"] = identity.birth_name
        if first:
            partial["given"] = [first]
        names.append(partial)
    if identity.used_name or identity.used_given_name:
        usual: dict[str, Any] = {"use": "usual"}
        if identity.used_name:
            usual["family"] = identity.used_name
        if identity.used_given_name:
            usual["given"] = [identity.used_given_name]
        names.append(usual)
    return names


def _birth_place(code: str) -> dict[str, Any] | None:
    """The INSEE code of a commune, else (99 + country: born abroad) the country, as the
    INSEE country code; 99999 (birth place unknown) gives no birthPlace."""
    if code == "99999":
        return None
    if code.startswith("99"):
        address: dict[str, Any] = {"country": code}
    else:
        address = {
            "extension": [{"url": EXT_INSEE_CODE, "valueCoding": _coding(CS_INSEE_COMMUNE, code)}]
        }
    return {"url": EXT_BIRTH_PLACE, "valueAddress": address}


def patient_resource(
    identity: StoredIdentity,
    *,
    version_id: str,
    last_updated: str,
    replaces: Iterable[int] = (),
) -> dict[str, Any]:
    """The FR Core Patient of one version of a stored identity.

    `replaces` are the records merged into this one; `version_id` and `last_updated` are the
    message log id and the time of the history row that made this version (docs/fhir.md: the
    versionId convention).
    """
    with_ins = identity.ins_usable and identity.ins is not None
    place = identity.birth_place_insee or ""
    # fr-core-patient-ins requires a birthPlace INSEE code, which only a commune has.
    ins_profile = with_ins and bool(place) and not place.startswith("99")
    profiles = [canonical(PROFILE_PATIENT)]
    if ins_profile:
        profiles.append(canonical(PROFILE_PATIENT_INS))
    extensions: list[dict[str, Any]] = _reliability(identity, ins_profile)
    birth_place = _birth_place(place) if place else None
    if birth_place:
        extensions.append(birth_place)
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(identity.id),
        "meta": {"versionId": version_id, "lastUpdated": last_updated, "profile": profiles},
        "extension": extensions,
    }
    identifiers = _identifiers(identity, with_ins)
    if identifiers:
        resource["identifier"] = identifiers
    resource["active"] = identity.active
    names = _names(identity)
    if names:
        resource["name"] = names
    gender = GENDER.get((identity.sex or "").upper())
    if gender:
        resource["gender"] = gender
    if identity.birth_date:
        resource["birthDate"] = identity.birth_date  # YYYY, YYYY-MM or YYYY-MM-DD, as stored
    links = _links(identity, replaces)
    if links:
        resource["link"] = links
    return resource


def _links(identity: StoredIdentity, replaces: Iterable[int]) -> list[dict[str, Any]]:
    if not identity.active and identity.merged_into is not None:
        # merged_into is the final survivor: merges keep chains flat
        survivor = f"Patient/{identity.merged_into}"
        return [{"other": {"reference": survivor}, "type": "replaced-by"}]
    return [
        {"other": {"reference": f"Patient/{other}"}, "type": "replaces"}
        for other in sorted(set(replaces))
    ]


def sexes_for(genders: Sequence[str]) -> tuple[str, ...]:
    """The PID-8 codes a gender search matches; ValueError names an unknown gender."""
    out: list[str] = []
    for gender in genders:
        if gender not in SEXES_OF_GENDER:
            raise ValueError(f"gender {gender!r}: male, female, other or unknown")
        out += SEXES_OF_GENDER[gender]
    return tuple(out)
