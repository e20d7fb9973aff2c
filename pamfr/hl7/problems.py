"""The identity rules' findings and refusals as ERR segments: table 0357 code and place."""

from __future__ import annotations

from pamfr.hl7.errors import Problem
from pamfr.identity.findings import Finding, IdentityRefused, Note, Refusal

# The PID field (or other place) that each identity field comes from.
_FIELD_PLACES = {
    "birth_name": "5",
    "first_given_name": "5",
    "birth_date": "7",
    "sex": "8",
    "birth_place_insee": "11",
}

_REFUSALS: dict[Refusal, tuple[int, str]] = {
    Refusal.IPP_MISSING: (101, "PID^{p}^3"),
    Refusal.IPP_WITHOUT_AUTHORITY: (101, "PID^{p}^3"),
    Refusal.SECOND_IPP_SAME_AUTHORITY: (205, "PID^{p}^3"),
    Refusal.IPPS_OF_TWO_PATIENTS: (205, "PID^{p}^3"),
    Refusal.BIRTH_NAME_MISSING: (101, "PID^{p}^5"),
    Refusal.INS_CORRUPT: (102, "PID^{p}^3"),
    Refusal.TWO_INS_OF_ONE_KIND: (205, "PID^{p}^3"),
    Refusal.PRIOR_MISSING: (101, "MRG^1^1"),
    Refusal.PRIOR_WITHOUT_AUTHORITY: (101, "MRG^1^1"),
    Refusal.SAME_PATIENT: (205, "MRG^1^1"),
    Refusal.PRIOR_MERGED_ELSEWHERE: (205, "MRG^1^1"),
    Refusal.PRIOR_OF_TWO_PATIENTS: (205, "MRG^1^1"),
    Refusal.NEW_IDENTIFIER_TAKEN: (205, "PID^{p}^3"),
    Refusal.INS_AND_IPP_DISAGREE: (205, "MRG^1^1"),
    Refusal.LINK_TO_SELF: (205, "PID^{p}^3"),
}

# 0 (message accepted) where the warning says what was not applied rather than what was wrong.
_FINDINGS: dict[Finding, tuple[int, str]] = {
    Finding.INS_NOT_VALIDATED: (103, "PID^{p}^32"),
    Finding.INS_STATUS_ABSENT: (101, "PID^{p}^32"),
    Finding.INS_DISQUALIFIED: (103, "PID^{p}^32"),
    Finding.INS_INVALID: (102, "PID^{p}^3"),
    Finding.INS_TRAITS_MISSING: (101, "PID^{p}^{f}"),
    Finding.INS_TEST_IN_PRODUCTION: (103, "PID^{p}^3"),
    Finding.NIA_INVALID_NIR_KEPT: (102, "PID^{p}^3"),
    Finding.NIA_NOT_REPLACING_NIR: (0, "PID^{p}^3"),
    Finding.INS_COLLISION: (205, "PID^{p}^3"),
    Finding.STATUS_CONFLICT: (103, "PID^{p}^32"),
    Finding.STATUS_ABSENT_KEPT: (101, "PID^{p}^32"),
    Finding.STATUS_ABSENT_NEW: (101, "PID^{p}^32"),
    Finding.ITI31_NOT_APPLIED: (0, "PID^{p}"),
    Finding.MERGED_AWAY: (204, "PID^{p}^3"),
    Finding.PRIOR_UNKNOWN: (204, "MRG^1^1"),
    Finding.MERGE_TARGET_REDIRECTED: (0, "PID^{p}^3"),
    Finding.NOTHING_KEPT_CHANGED: (0, "PID^{p}"),
    Finding.BIRTH_DATE_TRUNCATED: (102, "ZFD^1^1"),
}


def refusal_problem(refused: IdentityRefused) -> Problem:
    code, place = _REFUSALS[refused.reason]
    return Problem(code, place.format(p=refused.patient), refused.text)


def warning_problem(note: Note) -> Problem:
    code, place = _FINDINGS[note.finding]
    where = place.format(p=note.patient, f=_FIELD_PLACES.get(note.field, "3"))
    return Problem(code, where, note.text, severity="W")


def warning_problems(notes: list[Note]) -> tuple[Problem, ...]:
    return tuple(warning_problem(n) for n in notes if n.warning)
