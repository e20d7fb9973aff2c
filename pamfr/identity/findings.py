"""What the identity rules report: notes on an applied message, and refusals.

Both are domain facts with no HL7 place: `pamfr.hl7.problems` turns them into ERR segments
(table 0357 code, place, severity). A note's text never holds patient data: it is logged at
INFO, written in the history and sent back in ERR-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Finding(StrEnum):
    """Something a rule did that the sender and the auditor must learn of."""

    # The INS of the message was not kept (AA with a warning).
    INS_NOT_VALIDATED = "ins-not-validated"  # PID-32 holds no VALI
    INS_STATUS_ABSENT = "ins-status-absent"  # PID-32 empty
    INS_DISQUALIFIED = "ins-disqualified"  # DOUT, FICT, INVA or USUR with it
    INS_INVALID = "ins-invalid"  # bad key or unknown OID, on a message that is not VALI
    INS_TRAITS_MISSING = "ins-traits-missing"  # one of the five INS traits is missing
    INS_TEST_IN_PRODUCTION = "ins-test-in-production"  # test or demo OID, MSH-11 = P
    NIA_INVALID_NIR_KEPT = "nia-invalid-nir-kept"
    NIA_NOT_REPLACING_NIR = "nia-not-replacing-nir"
    # The store's INS changed by a rule (history notes, not warnings).
    INS_REMOVED = "ins-removed"  # the status says the identity is not qualifiable
    INS_DELETED = "ins-deleted"  # `""` under the INS authority (§4.4.3)
    INS_REPLACED = "ins-replaced"  # A47 with the previous INS in MRG-1 (§4.4.2)
    NIR_PREFERRED = "nir-preferred"  # NIA and NIR together: the NIR is kept (§4.4.1)
    # One INS, one active patient.
    INS_COLLISION = "ins-collision"
    INS_COLLISION_RESOLVED = "ins-collision-resolved"
    # Status.
    STATUS_CONFLICT = "status-conflict"  # PROV~VALI: the lower one wins
    STATUS_ABSENT_KEPT = "status-absent-kept"  # update with PID-32 empty: nothing changes
    STATUS_ABSENT_NEW = "status-absent-new"  # creation with PID-32 empty: provisoire
    # Events that do not (fully) apply.
    ITI31_NOT_APPLIED = "iti31-not-applied"  # an encounter event does not rewrite the identity
    MERGED_AWAY = "merged-away"  # the identifier belongs to a patient merged into another
    PRIOR_UNKNOWN = "prior-unknown"  # A40/A47: MRG-1 designates no patient
    MERGE_TARGET_REDIRECTED = "merge-target-redirected"  # A40 target merged: its survivor
    NOTHING_KEPT_CHANGED = "nothing-kept-changed"  # A28/A31 on a known patient: no stored change
    BIRTH_DATE_TRUNCATED = "birth-date-truncated"  # ZFD-1: a day or month no calendar has


# What goes back to the sender as an ERR of severity W; the other findings are history notes.
WARNINGS = frozenset(
    {
        Finding.INS_NOT_VALIDATED,
        Finding.INS_STATUS_ABSENT,
        Finding.INS_DISQUALIFIED,
        Finding.INS_INVALID,
        Finding.INS_TRAITS_MISSING,
        Finding.INS_TEST_IN_PRODUCTION,
        Finding.NIA_INVALID_NIR_KEPT,
        Finding.NIA_NOT_REPLACING_NIR,
        Finding.INS_COLLISION,
        Finding.STATUS_CONFLICT,
        Finding.STATUS_ABSENT_KEPT,
        Finding.STATUS_ABSENT_NEW,
        Finding.ITI31_NOT_APPLIED,
        Finding.MERGED_AWAY,
        Finding.PRIOR_UNKNOWN,
        Finding.MERGE_TARGET_REDIRECTED,
        Finding.NOTHING_KEPT_CHANGED,
        Finding.BIRTH_DATE_TRUNCATED,
    }
)


@dataclass(frozen=True, slots=True)
class Note:
    finding: Finding
    text: str
    field: str = ""  # the identity field it concerns (birth_date...), "" when none in particular
    patient: int = 1  # which patient of the message (2: the second PID of an A24/A37)

    @property
    def warning(self) -> bool:
        return self.finding in WARNINGS

    def as_json(self) -> dict[str, str]:
        return {"finding": self.finding.value, "text": self.text}


class Refusal(StrEnum):
    """Why a message cannot be applied at all (AE)."""

    IPP_MISSING = "ipp-missing"
    IPP_WITHOUT_AUTHORITY = "ipp-without-authority"
    SECOND_IPP_SAME_AUTHORITY = "second-ipp-same-authority"
    IPPS_OF_TWO_PATIENTS = "ipps-of-two-patients"
    BIRTH_NAME_MISSING = "birth-name-missing"
    INS_CORRUPT = "ins-corrupt"  # a qualified identity with an INS whose key or OID is wrong
    TWO_INS_OF_ONE_KIND = "two-ins-of-one-kind"
    PRIOR_MISSING = "prior-missing"  # MRG-1 holds no IPP (nor, for A47, an INS)
    PRIOR_WITHOUT_AUTHORITY = "prior-without-authority"
    SAME_PATIENT = "same-patient"  # A40: MRG-1 and PID-3 designate one patient
    PRIOR_MERGED_ELSEWHERE = "prior-merged-elsewhere"
    PRIOR_OF_TWO_PATIENTS = "prior-of-two-patients"  # A40: MRG-1's IPPs designate two
    NEW_IDENTIFIER_TAKEN = "new-identifier-taken"  # A47: PID-3's IPP is another patient's
    INS_AND_IPP_DISAGREE = "ins-and-ipp-disagree"  # A47: MRG-1's INS and PID-3's IPP
    LINK_TO_SELF = "link-to-self"


class IdentityRefused(Exception):
    def __init__(self, reason: Refusal, text: str, patient: int = 1) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.patient = patient
