"""HL7 ACK messages (original and enhanced mode), built as text: an ACK is a few fixed fields."""

from __future__ import annotations

import itertools
import os
import time
from datetime import datetime

from pamfr.hl7.ackmode import EnhancedAck, choose_ack
from pamfr.hl7.charset import UnknownCharset, codec_for
from pamfr.hl7.er7 import Header, read_header, unescape
from pamfr.hl7.errors import MessageRejected, Problem

_counter = itertools.count(1)
_PREFIX = f"{os.getpid() % 10000:04d}"


def new_control_id() -> str:
    """A fresh ACK control id, unique across processes and restarts (time, pid, counter)."""
    return f"{int(time.time() * 1000):x}{_PREFIX}{next(_counter):06d}"


def escape(text: str, header: Header | None) -> str:
    field_sep = header.field_sep if header else "|"
    comp, rep, esc, sub = header.encoding_chars if header else "^~\\&"
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def build_ack(
    header: Header | None,
    code: str,
    problems: list[Problem] | tuple = (),
    mode: EnhancedAck = EnhancedAck.APPLICATION,
) -> str:
    """The ACK text (segments separated by CR) for a message whose header is known or not;
    MSA-1 as MSH-15/16 and `mode` choose it (hl7/ackmode.py)."""
    fs = header.field_sep if header else "|"
    enc = header.encoding_chars if header else "^~\\&"
    comp = enc[0]
    now = datetime.now().strftime("%Y%m%d%H%M%S")
    event = header.event if header else ""
    msh = [
        "MSH",
        enc,
        header.receiving_app if header else "PAMFR",
        header.receiving_facility if header else "",
        header.sending_app if header else "",
        header.sending_facility if header else "",
        now,
        "",
        f"ACK{comp}{event}{comp}ACK" if event else f"ACK{comp}{comp}ACK",
        new_control_id(),
        header.processing_id if header and header.processing_id else "P",
        header.version if header and header.version else "2.5",
    ]
    charset = header.charset if header else ""
    if charset:
        msh += ["", "", "", "", "", charset]
    segments = [
        fs.join(msh),
        fs.join(
            ["MSA", choose_ack(header, code, mode).msa_code, header.control_id if header else ""]
        ),
    ]
    for p in problems:
        location = p.location.replace("^", comp)
        segments.append(
            fs.join(
                [
                    "ERR",
                    "",
                    location,
                    f"{p.code}{comp}{escape(p.code_text, header)}{comp}HL70357",
                    p.severity,
                    "",
                    "",
                    "",
                    escape(p.text, header),
                ]
            )
        )
    return "\r".join(segments) + "\r"


def encode_ack(text: str, header: Header | None) -> bytes:
    """The ACK in the received character set; one it cannot encode falls back to UTF-8."""
    try:
        codec = codec_for(header.charset) if header else "ascii"
        return text.encode(codec)
    except (UnknownCharset, UnicodeEncodeError):
        return text.encode("utf-8", errors="replace")


def ack_summary(ack: bytes) -> tuple[str, list[str]]:
    """MSA-1 and the ERR texts ("code place text") of an ACK, read with the ACK's own
    separators (MSH-1, MSH-2) and character set (MSH-18): a receiver echoes the sender's."""
    raw = ack.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    try:
        header = read_header(raw)
    except MessageRejected:
        return "", []
    try:
        codec = codec_for(header.charset)
        text = raw.decode(codec)
    except (UnknownCharset, UnicodeDecodeError):
        codec, text = "utf-8", raw.decode("utf-8", errors="replace")
    fs, comp = header.field_sep, header.component_sep
    code, errors = "", []
    for segment in text.split("\r"):
        fields = segment.split(fs)
        if fields[0] == "MSA" and len(fields) > 1:
            code = fields[1]
        elif fields[0] == "ERR":
            location = fields[2].replace(comp, "^") if len(fields) > 2 else ""  # as documented
            err_code = fields[3].split(comp)[0] if len(fields) > 3 else ""
            message = fields[8] if len(fields) > 8 else ""
            message = unescape(message, fs, header.encoding_chars, codec)
            errors.append(f"{err_code} {location} {message}".strip())
    return code, errors
