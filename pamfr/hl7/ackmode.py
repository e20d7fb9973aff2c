"""Which acknowledgement a message gets: HL7 v2.5 §2.9, MSH-15 and MSH-16 read by table 0155.

Both fields empty: original mode, the application ACK (AA/AE/AR). Otherwise enhanced mode:
MSH-15 asks for the accept (commit) ACK, CA/CE/CR; MSH-16 for the application ACK, AA/AE/AR;
each with AL (always), NE (never), ER (only on error or reject), SU (only on success), and an
empty field asks for nothing of its kind. pamfr answers after the commit either way, on the
connection the message came on, one answer per message: when both kinds are asked for, which
one is `[hl7] enhanced_ack` (the application ACK unless set). A value outside table 0155 asks
(an answer the GAM did not expect beats a GAM waiting for one).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pamfr.hl7.er7 import Header

COMMIT_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}


class EnhancedAck(StrEnum):
    """`[hl7] enhanced_ack`: the answer when MSH-15 and MSH-16 both ask, or none of this."""

    APPLICATION = "application"  # the application ACK, AA/AE/AR
    COMMIT = "commit"  # the commit ACK, CA/CE/CR (pamfr 0.1 answered it to any enhanced mode)
    ORIGINAL = "original"  # MSH-15/16 ignored: always the application ACK, as original mode


@dataclass(frozen=True, slots=True)
class AckChoice:
    msa_code: str  # MSA-1 of the ACK built (and logged)
    sent: bool  # False: the sender asked for no ACK of this outcome; the log keeps it


def _asks(condition: str, success: bool) -> bool:
    match condition.strip().upper():
        case "" | "NE":
            return False
        case "ER":
            return not success
        case "SU":
            return success
        case _:  # AL, or a value outside table 0155
            return True


def choose_ack(
    header: Header | None, code: str, mode: EnhancedAck = EnhancedAck.APPLICATION
) -> AckChoice:
    """The ACK for an outcome `code` (AA, AE or AR) of a message with this header."""
    if header is None or not header.enhanced_mode or mode is EnhancedAck.ORIGINAL:
        return AckChoice(code, sent=True)
    success = code == "AA"
    application = _asks(header.application_ack_type, success)
    commit = _asks(header.accept_ack_type, success)
    if commit and (not application or mode is EnhancedAck.COMMIT):
        return AckChoice(COMMIT_CODES.get(code, code), sent=True)
    return AckChoice(code, sent=application)
