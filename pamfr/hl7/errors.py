"""The HL7 error of a message: a table 0357 code, a place (`PID^1^3`) and a human text."""

from __future__ import annotations

from dataclasses import dataclass

# HL7 table 0357 (message error condition codes) with their standard texts.
ERROR_TEXTS: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a message: becomes one ERR segment of the ACK."""

    code: int
    location: str  # "PID^1^3" style, "" when the problem is not in a field
    text: str
    severity: str = "E"  # E error, W warning, I information

    @property
    def code_text(self) -> str:
        return ERROR_TEXTS.get(self.code, "Unknown error")


class MessageRejected(Exception):
    """Raised when a message cannot be applied; `ack_code` is AE or AR."""

    def __init__(self, problems: list[Problem] | Problem, ack_code: str = "AE") -> None:
        self.problems = problems if isinstance(problems, list) else [problems]
        self.ack_code = ack_code
        super().__init__("; ".join(p.text for p in self.problems))
