"""One frame on the path: as it arrived (Inbound), once read (Prepared), once answered
(Outcome). Picklable, so the reading can run in a parse worker process."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from pamfr.hl7.er7 import SEGMENT_SPLIT, Header, strip_leading
from pamfr.hl7.errors import Problem
from pamfr.hl7.parse import AdtMessage


class Door(StrEnum):
    """How a frame came in; recorded in the message log and counted in /metrics."""

    MLLP = "mllp"
    FILE = "file"
    REPLAY = "replay"
    REPROCESS = "reprocess"
    LOCAL = "local"  # handed in by code: tests, benchmarks


@dataclass(frozen=True, slots=True)
class Inbound:
    """One frame as it arrived: the raw bytes and where they came from."""

    raw: bytes
    peer: str = ""
    door: Door = Door.LOCAL
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    size: int | None = None  # the real size when `raw` is only the head of an oversized frame
    started: float = field(default_factory=time.perf_counter)
    reprocess_of: int | None = None  # the log row whose stored raw this is, run again

    @property
    def oversized(self) -> bool:
        return self.size is not None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame read: its header and message when it could be, and the answer so far."""

    inbound: Inbound
    header: Header | None
    message: AdtMessage | None
    code: str  # AA when the message is to be applied, else AE / AR
    problems: tuple[Problem, ...] = ()
    content_sha256: str | None = None  # tells a resend from a reused control id


@dataclass(frozen=True, slots=True)
class Outcome:
    """What was answered: the ACK bytes and the facts of the log row."""

    ack: bytes
    code: str  # AA / AE / AR (CA / CE / CR when the commit ACK is the one sent)
    message_id: int | None
    control_id: str = ""
    event: str = ""
    duplicate: bool = False
    error_text: str | None = None
    problems: tuple[Problem, ...] = ()  # every ERR of the ACK, warnings (severity W) included
    msa_code: str = ""  # MSA-1 of the ACK: CA / CE / CR for a commit ACK (hl7/ackmode.py)
    sent: bool = True  # False: MSH-15/16 asked for no ACK of this outcome (still logged)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "W")


def content_digest(raw: bytes) -> str:
    """SHA-256 of the message with its segment separators and blank lines normalised: the
    same message resent through another door (file, MLLP) has the same digest."""
    segments = (s for s in SEGMENT_SPLIT.split(strip_leading(raw).decode("latin-1")) if s.strip())
    return hashlib.sha256("\r".join(segments).encode("latin-1")).hexdigest()
