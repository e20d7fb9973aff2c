"""A stored identity as an FR Core Patient (FHIR R4, FR Core 2.1.0), from the read side's view.

Pure: it takes the dict `pamfr.store.readside.patient_view` returns (or a past version of it
rebuilt from the history) and gives the resource as a JSON-ready dict. docs/fhir.md is the
mapping table; the choices it documents are made here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

FR_CORE_VERSION = "2.1.0"
FHIR_VERSION = "4.0.1"
FR_CORE = "https://hl7.fr/ig/fhir/core"
FR_CORE_IG = f"{FR_CORE}/ImplementationGuide/hl7.fhir.fr.core"
PROFILE_PATIENT = f"{FR_CORE}/StructureDefinition/fr-core-patient"
PROFILE_PATIENT_INS = f"{FR_CORE}/StructureDefinition/fr-core-patient-ins"

EXT_RELIABILITY = f"{FR_CORE}/StructureDefinition/fr-core-identity-reliability"
EXT_BIRTH_LIST_GIVEN_NAME = f"{FR_CORE}/StructureDefinition/fr-core-patient-birth-list-given-name"
EXT_BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
EXT_INSEE_CODE = f"{FR_CORE}/StructureDefinition/fr-core-address-insee-code"

CS_IDENTITY_STATUS = f"{FR_CORE}/CodeSystem/fr-core-cs-identity-status"
CS_STATUS_COMMENT = f"{FR_CORE}/CodeSystem/fr-core-cs-identity-status-comment"
CS_METHOD_COLLECTION = f"{FR_CORE}/CodeSystem/fr-core-cs-method-collection"
CS_VALIDATION_MODE = f"{FR_CORE}/CodeSystem/fr-core-cs-mode-validation-identity"
CS_FR_V2_0203 = f"{FR_CORE}/CodeSystem/fr-core-cs-v2-0203"
CS_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CS_INSEE_COMMUNE = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"

# An assigning authority known by its namespace only (CX-4.1, no OID): this pamfr-owned URI,
# the namespace percent-encoded, is its system. It never changes for a given namespace.
NAMESPACE_SYSTEM = "urn:pamfr:authority:"

# The INS assigning authorities: (FR Core identifier type, use).
INS_SYSTEMS: dict[str, tuple[str, str]] = {
    "1.2.250.1.213.1.4.8": ("INS-NIR", "official"),
    "1.2.250.1.213.1.4.9": ("INS-NIA", "temp"),
    "1.2.250.1.213.1.4.10": ("INS-NIR-TEST", "official"),
    "1.2.250.1.213.1.4.11": ("INS-NIR-DEMO", "official"),
}

# pamfr's status -> identityStatus, as FR Core 2.1.0 reads it: a qualified identity is VALI
# with its INS (invariant fr-core-1); QUAL exists in the code system but belongs to the
# later builds' reading. A qualified identity whose INS may not be used is shown VALI
# without its INS, as a validated one.
IDENTITY_STATUS = {
    "provisoire": "PROV",
    "recuperee": "RECUP",
    "validee": "VALI",
    "qualifiee": "VALI",
}
ATTRIBUTE_CODES = {"douteuse": "DOUT", "fictive": "FICT", "homonyme": "HOMA"}
# table 0445 codes FR Core's comment code system has (others are left out, not invented)
COMMENT_CODES = frozenset(
    "VIDE DOUB DESA DPOT DOUA COLP COLV FILI CACH ANOM IDVER RECD IDRA USUR HOMD INVA "
    "HOMA FICT DOUT".split()
)
# ZFD-5 (identity obtention mode): the same codes in FR Core.
METHOD_COLLECTION = frozenset({"SM", "CV", "INSI", "CB", "RFID", "AV"})
# ZFD-7 (document checked) -> validationMode. The v2 list and FR Core's differ: LE (livret de
# famille) is FR Core's LEP (livret de famille des parents), AC (acte de naissance with the
# carte Vitale with photograph) is ANCV. PC (driving licence), CE, CM, TC, DC and IE have no
# equivalent in the required value set and are not sent.
VALIDATION_MODE = {
    "CN": "CN",
    "PA": "PA",
    "CS": "CS",
    "AN": "AN",
    "CC": "CC",
    "AV": "AV",
    "LE": "LEP",
    "AC": "ANCV",
}
# PID-8 (HL7 table 0001) -> gender; N (not applicable) gives no gender.
GENDER = {"M": "male", "F": "female", "U": "unknown", "O": "other", "A": "other"}
SEXES_OF_GENDER: dict[str, tuple[str, ...]] = {
    "male": ("M",),
    "female": ("F",),
    "unknown": ("U",),
    "other": ("O", "A"),
}

_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_DIGITS = re.compile(r"[0-9]{8}")


def canonical(url: str) -> str:
    """A profile's canonical URL pinned to the FR Core version emitted."""
    return f"{url}|{FR_CORE_VERSION}"


def identifier_system(authority: str | None, oid: str | None) -> str:
    """urn:oid:<OID> when the assigning authority has one, else the namespace's own URI."""
    if oid:
        return f"urn:oid:{oid}"
    return NAMESPACE_SYSTEM + quote(authority or "", safe="")


def parse_system(system: str) -> tuple[str, str] | None:
    """("oid", OID) or ("namespace", name) for a system this API emits; None otherwise."""
    if system.startswith("urn:oid:") and _OID.fullmatch(system[8:]):
        return "oid", system[8:]
    if system.startswith(NAMESPACE_SYSTEM) and len(system) > len(NAMESPACE_SYSTEM):
        return "namespace", unquote(system[len(NAMESPACE_SYSTEM) :])
    return None


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


def _reliability(view: Mapping[str, Any]) -> dict[str, Any]:
    subs: list[dict[str, Any]] = []
    mode = (view.get("identity_mode") or "").upper()
    if mode in METHOD_COLLECTION:
        subs.append({"url": "methodCollection", "valueCoding": _coding(CS_METHOD_COLLECTION, mode)})
    queried = _fhir_date(view.get("insi_query_date"))
    if queried:
        subs.append({"url": "dateCollection", "valueDate": queried})  # 2.1.0's name
    status = IDENTITY_STATUS.get(view["status"], "PROV")
    subs.append({"url": "identityStatus", "valueCoding": _coding(CS_IDENTITY_STATUS, status)})
    comments = [ATTRIBUTE_CODES[a] for a in view.get("attributes", ()) if a in ATTRIBUTE_CODES]
    comments += [c for c in view.get("other_status_codes", ()) if c in COMMENT_CODES]
    for code in dict.fromkeys(comments):
        subs.append({"url": "comment", "valueCoding": _coding(CS_STATUS_COMMENT, code)})
    document = VALIDATION_MODE.get((view.get("identity_document") or "").upper())
    if document:
        subs.append({"url": "validationMode", "valueCoding": _coding(CS_VALIDATION_MODE, document)})
    return {"url": EXT_RELIABILITY, "extension": subs}


def _identifiers(view: Mapping[str, Any], with_ins: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if with_ins and view.get("ins"):
        ins = view["ins"]
        kind, use = INS_SYSTEMS[ins["oid"]]
        out.append(
            {
                "use": use,
                "type": {"coding": [_coding(CS_FR_V2_0203, kind)]},
                "system": f"urn:oid:{ins['oid']}",
                "value": ins["value"],
            }
        )
    for ident in view["identifiers"]:
        if ident["type"] == "INS":  # the INS is the one above, or none
            continue
        entry: dict[str, Any] = {}
        if ident["type"] == "PI":
            entry["use"] = "usual"
        entry["type"] = {"coding": [_coding(CS_V2_0203, ident["type"])]}
        entry["system"] = identifier_system(ident["authority"], ident["oid"])
        entry["value"] = ident["value"]
        out.append(entry)
    return out


def _names(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    names: list[dict[str, Any]] = []
    given_list = [g for g in view.get("birth_given_names") or () if g]
    first = view.get("first_given_name") or (given_list[0] if given_list else None)
    if view.get("birth_name") or first:
        official: dict[str, Any] = {"use": "official"}
        if given_list or first:
            official["extension"] = [
                {
                    "url": EXT_BIRTH_LIST_GIVEN_NAME,
                    "valueString": " ".join(given_list) if given_list else first,
                }
            ]
        if view.get("birth_name"):
            official["family"] = view["birth_name"]
        if first:
            official["given"] = [first]
        names.append(official)
    if view.get("used_name") or view.get("used_given_name"):
        usual: dict[str, Any] = {"use": "usual"}
        if view.get("used_name"):
            usual["family"] = view["used_name"]
        if view.get("used_given_name"):
            usual["given"] = [view["used_given_name"]]
        names.append(usual)
    return names


def patient_resource(
    view: Mapping[str, Any],
    *,
    version_id: str,
    last_updated: str,
    replaces: Iterable[int] = (),
) -> dict[str, Any]:
    """The FR Core Patient of one version of a stored identity.

    `view` has patient_view's shape; `replaces` are the records merged into this one;
    `version_id` and `last_updated` are the message log id and the time of the history row
    that made this version (docs/fhir.md: the versionId convention).
    """
    with_ins = bool(view.get("ins_usable")) and bool(view.get("ins"))
    profiles = [canonical(PROFILE_PATIENT)]
    if with_ins:
        profiles.append(canonical(PROFILE_PATIENT_INS))
    extensions: list[dict[str, Any]] = [_reliability(view)]
    if view.get("birth_place_insee"):
        code = view["birth_place_insee"]
        extensions.append(
            {
                "url": EXT_BIRTH_PLACE,
                "valueAddress": {
                    "extension": [
                        {"url": EXT_INSEE_CODE, "valueCoding": _coding(CS_INSEE_COMMUNE, code)}
                    ]
                },
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(view["id"]),
        "meta": {"versionId": version_id, "lastUpdated": last_updated, "profile": profiles},
        "extension": extensions,
    }
    identifiers = _identifiers(view, with_ins)
    if identifiers:
        resource["identifier"] = identifiers
    resource["active"] = bool(view["active"])
    names = _names(view)
    if names:
        resource["name"] = names
    gender = GENDER.get((view.get("sex") or "").upper())
    if gender:
        resource["gender"] = gender
    if view.get("birth_date"):
        resource["birthDate"] = view["birth_date"]  # YYYY, YYYY-MM or YYYY-MM-DD, as stored
    links = _links(view, replaces)
    if links:
        resource["link"] = links
    return resource


def _links(view: Mapping[str, Any], replaces: Iterable[int]) -> list[dict[str, Any]]:
    if not view["active"] and view.get("merged_into") is not None:
        # merged_into is the final survivor: merges keep chains flat
        return [{"other": {"reference": f"Patient/{view['merged_into']}"}, "type": "replaced-by"}]
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
