"""The other resources of the read API: CapabilityStatement, Bundle, OperationOutcome."""

from __future__ import annotations

from typing import Any

from pamfr.fhir.patient import (
    FHIR_VERSION,
    FR_CORE_IG,
    FR_CORE_VERSION,
    PROFILE_PATIENT,
    PROFILE_PATIENT_INS,
    canonical,
)

# The search parameters of Patient, as the CapabilityStatement lists them.
SEARCH_PARAMS: tuple[tuple[str, str, str], ...] = (
    ("_id", "token", "The logical id (several, comma separated)"),
    (
        "identifier",
        "token",
        "system|value, |value, system| or value, comma separated (any): an IPP "
        "(urn:oid:<authority OID>, or urn:pamfr:authority:<key> for an authority without an "
        "ISO OID), a usable INS (urn:oid:1.2.250.1.213.1.4.8 INS-NIR, ...9 INS-NIA, ...10 "
        "test, ...11 demo) or a billing NIR (urn:oid:1.2.250.1.213.1.4.13, ...14)",
    ),
    ("family", "string", "Start of the birth or used name (case- and accent-insensitive)"),
    ("given", "string", "Start of the first birth given name or of the used given name (idem)"),
    ("name", "string", "Start of any of the four names above (idem)"),
    ("birthdate", "date", "YYYY, YYYY-MM or YYYY-MM-DD (eq only)"),
    ("gender", "token", "male, female, other, unknown (comma separated: any)"),
    ("active", "token", "true or false (false: the records merged into another)"),
)


def operation_outcome(code: str, text: str, severity: str = "error") -> dict[str, Any]:
    """One issue; `code` from http://hl7.org/fhir/issue-type (not-found, invalid, login...)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def capability_statement(software_version: str, date: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "pamfr",
        "kind": "instance",
        "software": {"name": "pamfr", "version": software_version},
        "implementation": {
            "description": (
                "pamfr: patient identities received from the French identity feed "
                f"(IHE PAM FR), read-only, as FR Core {FR_CORE_VERSION} Patient resources"
            )
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "implementationGuide": [f"{FR_CORE_IG}|{FR_CORE_VERSION}"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Read-only. When the server has tokens configured, every request carries "
                    "Authorization: Bearer <token>."
                ),
                "security": {
                    "cors": False,
                    "description": "Bearer tokens (read-only), TLS off the loopback",
                },
                "resource": [
                    {
                        "type": "Patient",
                        "profile": canonical(PROFILE_PATIENT),
                        "supportedProfile": [
                            canonical(PROFILE_PATIENT),
                            canonical(PROFILE_PATIENT_INS),
                        ],
                        "interaction": [
                            {"code": "read"},
                            {"code": "vread"},
                            {"code": "history-instance"},
                            {"code": "search-type"},
                        ],
                        "versioning": "versioned",
                        "readHistory": True,
                        "updateCreate": False,
                        "searchParam": [
                            {"name": name, "type": kind, "documentation": doc}
                            for name, kind, doc in SEARCH_PARAMS
                        ],
                    }
                ],
            }
        ],
    }


def bundle(
    kind: str,
    total: int,
    entries: list[dict[str, Any]],
    links: list[tuple[str, str]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": kind,
        "total": total,
        "link": [{"relation": rel, "url": url} for rel, url in links],
    }
    if entries:
        out["entry"] = entries
    return out
