"""Light ER7 reading: segments and the MSH header, before (and without) hl7apy.

The header is needed before anything else: its MSH-18 says how to decode the bytes, and
its MSH-3/4/10 make the duplicate-control key.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from pamfr.hl7.errors import MessageRejected, Problem

SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
DEFAULT_ENCODING_CHARS = "^~\\&"


@dataclass(frozen=True, slots=True)
class Header:
    field_sep: str
    encoding_chars: str  # MSH-2: component, repetition, escape, subcomponent
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    message_type: str
    event: str
    structure: str
    control_id: str
    processing_id: str
    version: str  # MSH-12 as received, e.g. "2.5^FRA^2.11"
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    charset: str  # MSH-18 as received

    @property
    def component_sep(self) -> str:
        return self.encoding_chars[0]

    @property
    def enhanced_mode(self) -> bool:
        return bool(self.accept_ack_type or self.application_ack_type)

    @property
    def version_id(self) -> str:
        return self.version.split(self.component_sep, 1)[0]


def split_segments(text: str) -> list[str]:
    """Segments of a message; CR, LF and CRLF all separate, blank lines are dropped."""
    return [s for s in SEGMENT_SPLIT.split(text) if s.strip()]


def _first_line(raw: bytes) -> bytes:
    cut = len(raw)
    for sep in (b"\r", b"\n"):
        pos = raw.find(sep)
        if pos != -1:
            cut = min(cut, pos)
    return raw[:cut]


def strip_leading(raw: bytes) -> bytes:
    """Drop a UTF-8 byte-order mark and whitespace some senders put before MSH."""
    raw = raw.lstrip(b" \t\r\n")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:].lstrip(b" \t\r\n")
    return raw


def read_header(raw: bytes) -> Header:
    """Read MSH from the raw bytes; MessageRejected (AR, 100) when there is no usable MSH."""
    line = _first_line(strip_leading(raw)).decode("latin-1")
    if not line.startswith("MSH") or len(line) < 8:
        raise MessageRejected(
            Problem(100, "MSH^1", "no MSH segment at the start of the message"), "AR"
        )
    field_sep = line[3]
    fields = line.split(field_sep)
    encoding_chars = fields[1]
    separators = field_sep + encoding_chars[:4]
    if (
        len(encoding_chars) < 4
        or len(set(separators)) != 5
        or not all(c.isascii() and c.isprintable() and not c.isalnum() for c in separators)
        or " " in separators
    ):
        raise MessageRejected(
            Problem(100, "MSH^1^2", "MSH-1/MSH-2 do not hold valid separators"), "AR"
        )

    def msh(n: int) -> str:
        # fields[0] is "MSH" and fields[1] is MSH-2: MSH-n is fields[n - 1].
        return fields[n - 1] if len(fields) >= n else ""

    msg_type = msh(9).split(encoding_chars[0])
    return Header(
        field_sep=field_sep,
        encoding_chars=encoding_chars[:4],
        sending_app=msh(3),
        sending_facility=msh(4),
        receiving_app=msh(5),
        receiving_facility=msh(6),
        message_type=msg_type[0],
        event=msg_type[1] if len(msg_type) > 1 else "",
        structure=msg_type[2] if len(msg_type) > 2 else "",
        control_id=msh(10),
        processing_id=msh(11).split(encoding_chars[0], 1)[0],
        version=msh(12),
        accept_ack_type=msh(15),
        application_ack_type=msh(16),
        charset=msh(18),
    )


def unescape(text: str, field_sep: str, encoding_chars: str, codec: str = "latin-1") -> str:
    """Resolve the HL7 escape sequences of one value: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\,
    \\Xhh..\\ (bytes in the message's character set, `codec`); highlighting (\\H\\ \\N\\),
    formatting and character-set switches are dropped.

    python-hl7's unescape reads \\Xhh\\ as Latin-1 whatever the message's character set, and
    logs the field's value when a sequence is malformed: values are patient data."""
    comp, rep, esc, sub = encoding_chars[:4]
    if esc not in text:
        return text
    plain = {"F": field_sep, "S": comp, "T": sub, "R": rep, "E": esc}
    out: list[str] = []
    pos = 0
    while True:
        start = text.find(esc, pos)
        end = text.find(esc, start + 1) if start != -1 else -1
        if end == -1:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        sequence = text[start + 1 : end]
        if sequence in plain:
            out.append(plain[sequence])
        elif sequence[:1] == "X" and len(sequence) > 1:
            with contextlib.suppress(ValueError):  # not hex, or not in that set: dropped
                out.append(bytes.fromhex(sequence[1:]).decode(codec))
        pos = end + 1
